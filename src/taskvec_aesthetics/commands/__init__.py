"""The subcommands of the `taskvec-aesthetics` command line, by job: each module's `add_<name>(subparsers)` declares a
subcommand's arguments and sets its `run`; `options` holds what several commands share."""
