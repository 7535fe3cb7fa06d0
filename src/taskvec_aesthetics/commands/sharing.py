"""Sharing: `push` a saved folder to the Hub, serve the web `app` (or push the demo's for a Space)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..constants import (
    BANK_CONFIG_FILE,
    CARD_FILE,
    COEFFICIENTS,
    COEFFICIENTS_FILE,
    CONFIG_FILE,
    EXPORTS,
    MERGED,
    WEIGHTS_FILE,
)
from ..errors import InputError
from ..utils.io import read_json

__all__ = ["add_app", "add_push", "push_saved", "saved_kind"]


# -- push ----------------------------------------------------------------------------------------------------------
def add_push(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="push a saved model, coefficients export or task-vector bank to the Hub",
        description="Upload a folder written by save_pretrained (a base or merged model, a coefficients-only "
        "personalized model or a task-vector bank, told apart by its files) to a Hub repository in one commit, with "
        "its model card. The folder is loaded first, so a coefficients export whose base or bank cannot be resolved "
        "is never published. Authenticate with `hf auth login` or the HF_TOKEN variable.",
    )
    parser.add_argument("path", help="the saved folder")
    parser.add_argument("repo_id", help="Hub repository, e.g. user/my-aesthetic-model (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--revision",
        "--branch",
        dest="revision",
        metavar="BRANCH",
        help="branch to push to, created from main if missing (default: main)",
    )
    parser.add_argument(
        "--export",
        choices=EXPORTS,
        help="personalized models: push merged weights or coefficients only (default: as saved)",
    )
    parser.add_argument("--commit-message", help="message of the commit")
    parser.add_argument("--license", help="license of the card metadata (default: other)")
    parser.add_argument(
        "--overwrite-card",
        action="store_true",
        help="replace a README.md you wrote (in the folder or on the Hub) with the generated card",
    )
    parser.set_defaults(run=run_push)


def run_push(args: argparse.Namespace) -> None:
    commit = push_saved(
        args.path,
        args.repo_id,
        export=args.export,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        overwrite_card=args.overwrite_card,
        license=args.license,
    )
    print(f"pushed {args.path} to {commit.repo_url.repo_id} at commit {commit.oid}: {commit.commit_url}")


def saved_kind(path: str | Path) -> str:
    """What a saved folder holds: `"bank"`, `"coefficients"` (a coefficients-only export) or `"model"`."""
    folder = Path(path)
    if (folder / BANK_CONFIG_FILE).is_file():
        return "bank"
    if (folder / CONFIG_FILE).is_file():
        config = read_json(folder / CONFIG_FILE, "a model config")
        if config.get("base_model"):
            return COEFFICIENTS
        if any(folder.glob("model*.safetensors")):
            return "model"
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise InputError(
        f"{path} is not a saved model or bank: expected {BANK_CONFIG_FILE}, or {CONFIG_FILE} with {WEIGHTS_FILE} or "
        f"{COEFFICIENTS_FILE}; found {found}"
    )


def push_saved(
    path: str | Path,
    repo_id: str,
    *,
    export: str | None = None,
    overwrite_card: bool = False,
    **push: Any,
) -> Any:
    """Push a folder written by `save_pretrained`: a base or merged model, a coefficients export or a bank.

    The folder is loaded first (a coefficients export resolves its base and bank, so a broken export is never
    published). A `README.md` the user wrote in the folder is pushed as the card, unless ``overwrite_card``.

    Args:
        path: the saved folder.
        repo_id: the Hub repository (created if missing).
        export: for personalized models, `"merged"` or `"coefficients"`; by default as saved.
        overwrite_card: replace a user-written card, in the folder and on the Hub, with the generated one.
        **push: the other arguments of `push_to_hub` (`private`, `token`, `revision`, `commit_message`, `license`).
    """
    from ..hub.cards import is_generated_card
    from ..modeling import AestheticModel
    from ..task_vectors.bank import TaskVectorBank

    kind = saved_kind(path)
    readme = Path(path) / CARD_FILE
    text = readme.read_text(encoding="utf-8") if readme.is_file() else None
    card = text if text is not None and not overwrite_card and not is_generated_card(text) else None
    if kind == "bank":
        if export is not None:
            raise InputError(f"{path} is a task-vector bank: export={export!r} applies to personalized models only")
        return TaskVectorBank.from_pretrained(path).push_to_hub(
            repo_id, overwrite_card=overwrite_card, card=card, **push
        )
    model = AestheticModel.from_pretrained(path)
    export = export or (COEFFICIENTS if kind == COEFFICIENTS else MERGED)
    return model.push_to_hub(repo_id, export=export, overwrite_card=overwrite_card, card=card, **push)


# -- app -----------------------------------------------------------------------------------------------------------
def add_app(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "app",
        help="serve the web app: rate a few photos, get a model of your taste (needs the `app` extra)",
        description="A Gradio page where visitors rate photos one at a time, personalize, "
        "see their unrated photos ranked, and download or push their model. With no arguments it uses the demo's "
        "base model, bank and photos, building them on first use (minutes on a CPU).",
    )
    parser.add_argument("--model", help="base model folder or Hub id (default: the demo's)")
    parser.add_argument("--bank", help="task-vector bank folder or Hub id (default: the one --model refers to)")
    parser.add_argument("--photos", help="folder of photos to rate (default: the demo's photo pool)")
    parser.add_argument("--port", type=int, help="port to serve on (default: 7860, or the next free one)")
    parser.add_argument("--cache-dir", help="where the demo's base and bank are cached")
    parser.add_argument(
        "--push-demo",
        metavar="NAMESPACE",
        help="instead of serving: push the demo's base, bank and photos to NAMESPACE on the Hub for a Space, and "
        "print the Space variables to set",
    )
    parser.set_defaults(run=run_app)


def run_app(args: argparse.Namespace) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError("the app needs Gradio: pip install 'taskvec-aesthetics[app]'") from None
    if args.push_demo:
        from ..app.space import push_demo

        for name, repo_id in push_demo(args.push_demo, cache_dir=args.cache_dir).items():
            print(f"{name}={repo_id}")
        return
    from ..app import serve

    serve(args.model, args.bank, args.photos, args.port, args.cache_dir)
