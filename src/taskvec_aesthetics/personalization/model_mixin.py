"""What makes an `AestheticModel` personalizable: coefficients, fitting, and the exports that save and load them.

`PersonalizableMixin` is composed into `AestheticModel` (as transformers composes `GenerationMixin` into its models):
it sees the model only through ``self``, so the network and its Hub face stay in `modeling` and everything about
personalization (the `personalization` state, `with_coefficients`, `personalize`, coefficients exports,
`personalization.json`, the personalized model card) lives here.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..configuration import AestheticConfig
from ..constants import COEFFICIENTS, ENSEMBLE, LIBRARY_NAME, PERSONALIZATION_FILE
from ..errors import InputError, InputTypeError, IntegrityError
from ..hub.cards import PAPER, bar_chart, card_title, number, reference_row, render_card
from ..hub.references import Reference
from ..processing import load_image_processor
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.coefficients import Coefficients
from ..task_vectors.merging import as_coefficients, coefficient_layout, functional_forward, merge_tensor, merged_copy
from ..utils.io import verify_manifest
from .config import PersonalizerConfig
from .exports import (
    check_finite_weights,
    load_coefficients_export,
    read_personalization_file,
    resolve_model_files,
    save_model_export,
)
from .output_ensemble import OutputEnsemble, scoring_cost
from .personalizer import Personalizer
from .report import PersonalizationState

if TYPE_CHECKING:
    from ..modeling import AestheticModel

__all__ = ["PersonalizableMixin"]

logger = logging.getLogger(__name__)


class PersonalizableMixin:
    """Personalization for `AestheticModel`: task-vector coefficients, their fit and their saved forms."""

    #: Once personalized: the bank and coefficients the model was merged from, and facts about the fit.
    personalization: PersonalizationState | None = None
    #: True while `forward` runs one task model of an output ensemble (`_ensemble_scores`).
    _ensemble_member: bool = False
    #: The output ensemble's task models' covered parameters where it last ran, and what they were merged from.
    _ensemble_members: tuple[tuple[Any, ...], list[dict[str, torch.Tensor]]] | None = None

    def with_coefficients(
        self,
        bank: TaskVectorBank,
        coefficients: Coefficients | Mapping[str, float] | torch.Tensor,
        info: Mapping[str, Any] | None = None,
        *,
        in_place: bool = False,
    ) -> AestheticModel:
        """Return a personalized model: theta_0 + sum_t c[g(p), t] * tau_t[p].

        Args:
            bank: a task-vector bank built on this model (checked by fingerprint).
            coefficients: a `Coefficients` object, a `{task: weight}` dict (task granularity) or a `[G, T]` tensor
                (granularity inferred from G: 1 is task, the number of layer groups is layer, the number of covered
                tensors is tensor).
            info: extra personalization facts to keep with the model (e.g. number of ratings, holdout metrics).
            in_place: merge into this model itself instead of a copy (for a base nobody else holds: one copy of the
                weights less). By default this model is not modified.
        """
        model = cast("AestheticModel", self)
        if model.personalization is not None:
            raise InputError("this model is already personalized; call with_coefficients on its base model")
        fingerprint = bank.check_base(model)
        coefficients = as_coefficients(coefficients, model.parameter_groups(), bank)
        layout = coefficient_layout(model.parameter_groups(), bank.parameter_names, coefficients.granularity)
        layout.check(coefficients, bank.task_names)
        base_source = model.source or Reference()  # frozen: shared safely with the copy's state
        personalized = cast("AestheticModel", merged_copy(model, layout, bank, coefficients, in_place))
        personalized.source = None  # not saved anywhere yet: the base's location is kept in its personalization
        personalized.personalization = PersonalizationState(
            bank=bank,
            coefficients=coefficients,
            base=base_source.with_fingerprint(fingerprint),
            info=dict(info or {}),
        )
        return personalized

    def with_output_ensemble(
        self,
        bank: TaskVectorBank,
        ensemble: OutputEnsemble,
        info: Mapping[str, Any] | None = None,
        *,
        in_place: bool = False,
    ) -> AestheticModel:
        """Return a personalized model that scores as the output ensemble of the bank's task models: each image's
        score is `ensemble.combine` of the T task models' (theta_0 + tau_t) scores on it.

        Nothing is merged: the model keeps the base's weights and the bank, and each forward pass runs the frozen
        prefix (the blocks no task vector covers, `untouched_prefix_blocks`) once and the covered blocks and the head
        T times, one per task model; when the bank covers the embeddings, T full passes. `info["scoring"]` states
        that cost (`output_ensemble.scoring_cost`). Save it with `export="ensemble"`.

        Args:
            bank: a task-vector bank built on this model (checked by fingerprint), with the ensemble's tasks.
            ensemble: the `OutputEnsemble` (e.g. `Personalizer.fit`'s, when the `"outputs"` candidate won).
            info: extra personalization facts to keep with the model.
            in_place: make this model itself the personalized one instead of a copy.
        """
        model = cast("AestheticModel", self)
        if model.personalization is not None:
            raise InputError("this model is already personalized; call with_output_ensemble on its base model")
        fingerprint = bank.check_base(model)
        ensemble.check()
        if ensemble.task_names != bank.task_names:
            raise InputError(
                f"the output ensemble weighs tasks {ensemble.task_names}, but the bank holds {bank.task_names}"
            )
        base_source = model.source or Reference()
        personalized = model if in_place else copy.deepcopy(model)
        personalized.source = None
        cost = scoring_cost(len(bank), model.adapter.num_blocks, model.untouched_prefix_blocks(bank.parameter_names))
        personalized.personalization = PersonalizationState(
            bank=bank,
            coefficients=None,
            base=base_source.with_fingerprint(fingerprint),
            info={**dict(info or {}), "scoring": cost},
            ensemble=ensemble,
        )
        return personalized

    def _scores_as_ensemble(self) -> bool:
        """Whether `forward` scores as an output ensemble (and is not running one of its task models)."""
        state = self.personalization
        return state is not None and state.ensemble is not None and not self._ensemble_member

    def _ensemble_scores(
        self, pixel_values: torch.Tensor | None, prefix_hidden: torch.Tensor | None, prefix_blocks: int
    ) -> torch.Tensor:
        """`[B]` scores of the output ensemble: the frozen prefix once, the covered part once per task model."""
        model = cast("AestheticModel", self)
        state = model.personalization
        assert state is not None and state.ensemble is not None and state.bank is not None
        bank, adapter = state.bank, model.adapter
        shared = model.untouched_prefix_blocks(bank.parameter_names)
        if prefix_hidden is not None:
            if shared is None or prefix_blocks > shared:
                raise InputError(
                    f"an output ensemble's task models differ from block {shared or 0} on: it cannot start from a "
                    f"hidden state after {prefix_blocks} blocks; pass pixel_values"
                )
            hidden = adapter.forward_blocks(prefix_hidden, prefix_blocks, shared)
        elif pixel_values is not None:
            hidden = pixel_values if shared is None else model.encode_prefix(pixel_values, shared)
        else:
            raise InputError("forward needs pixel_values or prefix_hidden, received neither")
        inputs: dict[str, Any] = (
            {"pixel_values": hidden} if shared is None else {"prefix_hidden": hidden, "prefix_blocks": shared}
        )
        own = dict(model.named_parameters())
        covered = bank.parameter_names
        # Each task model's covered parameters, theta_0 + tau_t exactly as the fit merged them (`merge_tensor`), are
        # kept (the memory of the bank's task vectors) until the model moves or its parameters change.
        key = (next(iter(own.values())).device, tuple((own[n].data_ptr(), own[n]._version) for n in covered))
        if model._ensemble_members is None or model._ensemble_members[0] != key:
            device, one = key[0], torch.ones(1, device=key[0])
            stacked = {n: t.to(device) for n, t in bank.stacked().items()}
            members = [
                {n: merge_tensor(own[n], t[task : task + 1], one, n).detach() for n, t in stacked.items()}
                for task in range(len(bank))
            ]
            model._ensemble_members = (key, members)
        scores = []
        model._ensemble_member = True
        try:
            for params in model._ensemble_members[1]:
                scores.append(functional_forward(model, params, **inputs).scores)
        finally:
            model._ensemble_member = False
        task_scores = torch.stack(scores)
        return state.ensemble.combine(task_scores.float()).to(task_scores.device, task_scores.dtype)

    def personalize(self, dataset: Any, bank: TaskVectorBank | None = None, **overrides: Any) -> AestheticModel:
        """Fit this user's coefficients from their ratings and return the personalized model.

        Args:
            dataset: a `datasets.Dataset` with `image` and `score` columns, or a list of (image, score) pairs.
            bank: the task-vector bank; by default the one this model refers to (`config.bank`).
            **overrides: `PersonalizerConfig` fields, `preset="paper"`, or `config=PersonalizerConfig(...)` (other
                fields given next to it override its values); `unlabeled=` photos without ratings (a folder or a
                list, see `Personalizer.fit`).
        """
        model = cast("AestheticModel", self)
        preset, config = overrides.pop("preset", None), overrides.pop("config", None)
        unlabeled = overrides.pop("unlabeled", None)
        if config is not None:
            if not isinstance(config, PersonalizerConfig) or preset:
                raise InputTypeError(
                    "config must be a PersonalizerConfig and cannot be combined with preset; received "
                    f"{type(config).__name__}" + (f" and preset={preset!r}" if preset else "")
                )
            config = dataclasses.replace(config, **overrides)
        elif preset:
            config = PersonalizerConfig.from_preset(preset, **overrides)
        else:
            config = PersonalizerConfig(**overrides)
        bank = bank if bank is not None else model.referenced_bank()
        return Personalizer(model, bank, config).fit(dataset, unlabeled).model

    def referenced_bank(self) -> TaskVectorBank:
        """The bank this model's config refers to (`config.bank_reference`), loaded and checked against it."""
        model = cast("AestheticModel", self)
        reference = model.config.bank_reference
        if reference is None or reference.location is None:
            raise InputError(
                "no bank given and this model refers to none: pass bank=TaskVectorBank.from_pretrained(...)"
            )
        return TaskVectorBank.from_pretrained(
            reference.location, revision=reference.load_kwargs().get("revision"), base=model
        )

    # -- saving and loading ------------------------------------------------------------------------------------
    def _save_export(
        self,
        directory: str | Path,
        export: str,
        save_weights: Callable[[Path], None],
        overwrite_card: bool = False,
    ) -> None:
        """Save as ``export`` in one transaction (`exports.save_model_export`); ``save_weights`` writes the plain
        weights of a merged export."""
        model = cast("AestheticModel", self)
        save_model_export(model, directory, export, save_weights, overwrite_card=overwrite_card)

    def _check_shareable(self) -> None:
        model = cast("AestheticModel", self)
        state = model.personalization
        if state is None or state.bank is None or (state.coefficients is None and state.ensemble is None):
            raise InputError(
                "export='coefficients' needs a personalized model with its bank (from personalize(), "
                "with_coefficients() or a coefficients export loaded with from_pretrained); this model has none. Push "
                "it with export='merged'"
            )
        kind, merged = (
            ("an ensemble", "") if state.ensemble is not None else ("a coefficients", ", or push with export='merged'")
        )
        for what, reference in (("base model", state.base), ("bank", state.bank_ref)):
            if reference is None or not reference.on_hub:
                raise InputError(
                    f"{kind} export on the Hub must reference its {what} by Hub repo id, but this model's "
                    f"{what} is {str(reference or 'unknown')!r}. Push the base and the bank first (push_to_hub), "
                    f"personalize the pushed or pulled objects{merged}"
                )

    # -- the Hub -----------------------------------------------------------------------------------------------
    def _personalized_card(self, export: str, repo_id: str | None, license: str) -> ModelCard:
        model = cast("AestheticModel", self)
        title = card_title(repo_id, "Personalized aesthetic scorer")
        state = model.personalization
        if state is None:
            raise InputError("this model is not personalized: its card is the base model's")
        info = dict(state.info or {})
        holdout = info.get("holdout_srocc")
        results = None
        if isinstance(holdout, (int, float)):
            results = [EvalResult(
                task_type="image-aesthetic-assessment", dataset_type="personal-ratings",
                dataset_split="cross-validation", dataset_name="Own ratings (cross-validated)", metric_type="srocc",
                metric_name="Cross-validated SROCC", metric_value=float(holdout),
            )]  # fmt: skip
        # The Hub links base_model to its page, so a base that is only a local folder is not named in the metadata.
        base_repo = state.base.repo_id if state.base.on_hub else None
        relation = ("adapter" if export in (COEFFICIENTS, ENSEMBLE) else "merge") if base_repo else None
        data = ModelCardData(
            library_name=LIBRARY_NAME,
            license=license,
            tags=["image-aesthetics", "personalized", "task-vectors", LIBRARY_NAME],
            base_model=base_repo,
            base_model_relation=relation,
            model_name=title,
            eval_results=results,
        )
        coefficients = state.coefficients
        return render_card(
            "personalized_model.md",
            data,
            title=title,
            location=repo_id or "path/to/model",
            export=export,
            base_ref=reference_row(state.base),
            bank_ref=reference_row(state.bank_ref),
            num_ratings=info.get("num_ratings"),
            num_pairs=info.get("num_pairs"),
            num_holdout=info.get("num_holdout"),
            holdout_srocc=number(holdout),
            cross_validation=info.get("cross_validation"),
            chosen_step=info.get("chosen_step"),
            calibrated=bool(info.get("calibration")),
            score_range=model.config.score_range,
            granularity=coefficients.granularity if coefficients else None,
            num_groups=len(coefficients.group_names) if coefficients else None,
            coefficient_rows=_coefficient_rows(coefficients) if coefficients else [],
            chart=bar_chart(coefficients.task_weights()) if coefficients else "",
            paper=PAPER,
            ensemble_rows=_ensemble_rows(state.ensemble) if state.ensemble is not None else [],
            scoring=(info.get("scoring") or {}).get("text") if state.ensemble is not None else None,
        )

    @classmethod
    def _load(cls, pretrained_model_name_or_path: str | Path | None, *model_args: Any, **kwargs: Any) -> Any:
        """`from_pretrained` of one folder read: a coefficients export resolved into its merged model, else the
        weights checked complete and finite, with the side files saved beside them (`_read_side_files`)."""
        location = pretrained_model_name_or_path
        subfolder = kwargs.get("subfolder") or ""
        hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir") if kwargs.get(k) is not None}
        config = kwargs.get("config")
        if not isinstance(config, AestheticConfig) and location is not None:
            config = AestheticConfig.from_pretrained(location, subfolder=subfolder, **hub_kwargs)
        if isinstance(config, AestheticConfig) and config.is_coefficients_export:
            if subfolder:
                raise InputError(
                    f"{location}: a coefficients-only export cannot yet be loaded from a subfolder "
                    f"({subfolder!r}); pass the subfolder's own path"
                )
            if location is None:
                raise InputError("a coefficients-only export is loaded from its folder or Hub repo; received none")
            return load_coefficients_export(cast("type[AestheticModel]", cls), location, config, **hub_kwargs)
        # A caller who asks for the loading info inspects the load itself (transformers' contract): what is missing
        # or differs from the folder's checksums is reported in the info, not raised.
        inspecting = bool(kwargs.get("output_loading_info"))
        # A mixin: the class after it in `AestheticModel`'s order is transformers' `PreTrainedModel`.
        model, info = super().from_pretrained(  # type: ignore[misc]
            location, *model_args, **{**kwargs, "output_loading_info": True}
        )
        where = f"the weights of {location if location is not None else 'the given state_dict'}"
        # A saved model lacking tensors would get random ones from transformers: a different model, silently. (A
        # `state_dict=` given in code may leave tensors to their initialisation on purpose.)
        if info["missing_keys"] and location is not None and not inspecting:
            missing = sorted(info["missing_keys"])
            raise IntegrityError(f"{where} lack {len(missing)} tensors of the model: {missing[:5]}")
        check_finite_weights(model, where)
        if location is not None:  # None: weights given as `state_dict=`, no folder to read side files from
            problem = model._read_side_files(location, subfolder, strict=not inspecting, **hub_kwargs)
            if problem is not None:
                logger.warning("%s", problem)
                info.setdefault("error_msgs", []).append(problem)
        return (model, info) if inspecting else model

    def _read_side_files(
        self, location: str | Path, subfolder: str, strict: bool = True, **hub_kwargs: Any
    ) -> str | None:
        """Record where the model lives and read the image processor and `personalization.json` saved beside it.

        The files are first checked against the folder's checksums: a mismatch raises, or with ``strict=False`` is
        returned as a message."""
        model = cast("AestheticModel", self)
        folder, model.source = resolve_model_files(location, subfolder=subfolder or None, **hub_kwargs)
        problem = None
        try:
            verify_manifest(folder)  # the weights and side files are those the save wrote
        except IntegrityError as error:
            if strict:
                raise
            problem = str(error)
        model._image_processor = load_image_processor(folder)
        info = read_personalization_file(folder)
        if info is not None:
            model.personalization = PersonalizationState.standalone(info, str(folder / PERSONALIZATION_FILE))
        return problem


def _ensemble_rows(ensemble: OutputEnsemble) -> list[dict[str, str]]:
    """Each task's weight of its standardized score, and the mean and spread it is standardized by, for the card."""
    return [
        {"task": name, "weight": f"{w:+.3f}", "mean": f"{m:.4g}", "spread": f"{s:.4g}"}
        for name, w, m, s in zip(
            ensemble.task_names, ensemble.weights.tolist(), ensemble.mean.tolist(), ensemble.spread.tolist()
        )
    ]


def _coefficient_rows(coefficients: Coefficients) -> list[dict[str, str]]:
    """Mean, min and max over the layer groups of each task's coefficient, for the card's table."""
    values = coefficients.values
    columns = {"mean": values.mean(dim=0), "min": values.min(dim=0).values, "max": values.max(dim=0).values}
    return [
        {"task": name, **{key: f"{float(column[i]):+.3f}" for key, column in columns.items()}}
        for i, name in enumerate(coefficients.task_names)
    ]
