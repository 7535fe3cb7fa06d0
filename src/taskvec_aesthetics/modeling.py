"""`AestheticModel`: an image encoder plus the paper's 10-bin score head, as a transformers `PreTrainedModel`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from huggingface_hub import CommitInfo, ModelCard, ModelCardData
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbones import BackboneAdapter, adapter_for
from .configuration import AestheticConfig
from .constants import (
    COEFFICIENTS,
    COEFFICIENTS_FILE,
    ENSEMBLE,
    ENSEMBLE_FILE,
    LIBRARY_NAME,
    MERGED,
    PERSONALIZATION_FILE,
    WEIGHTS_INDEX_FILE,
)
from .errors import InputError
from .hub.cards import DEFAULT_LICENSE, PAPER, card_title, count, render_card
from .hub.references import Reference
from .hub.repository import HubMixin, locate
from .losses import emd_loss
from .personalization.exports import resolve_export
from .personalization.model_mixin import PersonalizableMixin
from .personalization.optimisation import resolve_device
from .processing import ImageInput, collect_images, default_image_processor, open_image
from .task_vectors.fingerprint import model_fingerprint
from .utils.io import read_consistently

__all__ = ["AestheticModel", "AestheticModelOutput", "AestheticPreTrainedModel", "ScoreHead", "HEAD_GROUP"]

logger = logging.getLogger(__name__)

HEAD_GROUP = "head"


class ScoreHead(nn.Module):
    """Linear(d, 512) - GELU - Dropout(0.5) - Linear(512, bins) - Sigmoid, normalised to a distribution (paper)."""

    def __init__(self, in_features: int, hidden_size: int, num_bins: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_size)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_size, num_bins)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(self.fc2(self.dropout(self.act(self.fc1(features)))))
        return probs / probs.sum(dim=-1, keepdim=True)


@dataclass
class AestheticModelOutput(ModelOutput):
    """Output of [`AestheticModel`].

    Args:
        loss: EMD against label histograms, or MSE of normalised scores against label scores, when labels are given.
        scores: `[B]` predicted scores on `config.score_range`.
        distribution: `[B, num_bins]` predicted score distribution.
        features: `[B, d]` pooled encoder features.
        hidden_states: with `output_hidden_states=True`, the encoder's hidden state after the embeddings and after
            each block (from block `prefix_blocks` on when run from `prefix_hidden`).
        attentions: with `output_attentions=True`, the attention weights of each attention layer of the encoder
            (`[B, heads, tokens, tokens]`; needs `attn_implementation="eager"`, encoders without attention have none).
    """

    loss: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    distribution: torch.Tensor | None = None
    features: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def _select(states: list[torch.Tensor], selection: bool | int | list[int] | None) -> tuple | None:
    """The hidden states `output_hidden_states` asks for: all, none, or those at the given indices (others None)."""
    if selection is None or selection is False:
        return None
    if selection is True:
        return tuple(states)
    count = len(states)
    kept = {i % count for i in ([selection] if isinstance(selection, int) else selection) if -count <= i < count}
    return tuple(state if i in kept else None for i, state in enumerate(states))


class AestheticPreTrainedModel(PreTrainedModel):
    config_class = AestheticConfig
    config: AestheticConfig
    base_model_prefix = "aesthetic"
    main_input_name = "pixel_values"
    input_modalities = ("image",)  # type: ignore[assignment]  # transformers reads any sequence of names
    # The encoder does the attention and the checkpointing: these flags let transformers pass the requested attention
    # implementation and gradient checkpointing down to it, and the encoder then checks its own support.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    supports_gradient_checkpointing = True
    encoder: PreTrainedModel  # built by `AestheticModel.__init__`

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Callable = checkpoint, every_n_layers: int = 1
    ) -> None:
        # transformers' own setting reaches every layer that checkpoints itself (in training mode). In eval mode, where
        # personalization runs, those layers do not, so `AestheticModel.forward` checkpoints whole encoder blocks
        # through the backbone adapter instead: no block is checkpointed twice.
        super()._set_gradient_checkpointing(enable, gradient_checkpointing_func, every_n_layers)
        self._checkpoint_every = max(1, int(every_n_layers))

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The encoder is a PreTrainedModel and initialises itself; only the head is ours.
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)

    def initialize_weights(self) -> None:
        # transformers hands this class's "custom code" flag down to every sub-model, and with it the encoder skips
        # the inits it does at module level (CLIP's attention and MLP scales). The encoder initialises itself, with
        # its own flag; the head is ours. Both skip the tensors `from_pretrained` loaded.
        self.encoder.initialize_weights()
        super().initialize_weights()


class AestheticModel(PersonalizableMixin, HubMixin, AestheticPreTrainedModel):
    """An image aesthetic / quality scorer: any transformers vision encoder plus the paper's score head.

    Personalize it with [`AestheticModel.personalize`] or [`AestheticModel.with_coefficients`]; save it with
    `save_pretrained(dir, export="merged" | "coefficients")`; load either export with `from_pretrained`.

    Example:
    ```python
    >>> from transformers import CLIPVisionConfig
    >>> from taskvec_aesthetics import AestheticConfig, AestheticModel
    >>> model = AestheticModel(AestheticConfig(encoder_config=CLIPVisionConfig(
    ...     hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    ...     image_size=32, patch_size=8)))
    >>> model.score(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2])
    ```
    """

    def __init__(self, config: AestheticConfig) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder_config)
        self.head = ScoreHead(
            adapter_for(self.encoder).feature_dim, config.head_hidden_size, config.num_bins, float(config.head_dropout)
        )
        # Plain attributes (not tensors): where the weights came from and the image processor (once personalized, the
        # bank and coefficients: `personalization`). transformers builds models on the meta device: nothing allocates.
        self.source: Reference | None = None
        self.personalization = None
        self._image_processor: Any = None
        self.gradient_checkpointing = False  # see `gradient_checkpointing_enable`
        self.post_init()

    @classmethod
    def from_encoder(
        cls, encoder: PreTrainedModel, image_processor: Any = None, seed: int = 0, **config_kwargs: Any
    ) -> AestheticModel:
        """A base model from a (pretrained) encoder and a freshly initialised head, seeded for reproducibility.

        Args:
            encoder: a transformers vision model (its weights are copied).
            image_processor: the processor the encoder expects; by default one built from its config.
            seed: seed of the head's initialisation.
            **config_kwargs: other `AestheticConfig` fields (head sizes, `score_range`, ...).
        """
        torch.manual_seed(seed)
        model = cls(AestheticConfig(encoder_config=encoder.config, **config_kwargs))
        missing, unexpected = model.encoder.load_state_dict(encoder.state_dict(), strict=False)
        if missing or unexpected:
            raise InputError(
                f"encoder weights do not fit a {encoder.config.model_type} encoder: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        if image_processor is not None:
            model.image_processor = image_processor
        return model.eval()

    # -- structure -------------------------------------------------------------------------------------------
    @property
    def adapter(self) -> BackboneAdapter:
        """The backbone adapter of the encoder (blocks, layer groups, prefix computation)."""
        return adapter_for(self.encoder)

    def parameter_groups(self) -> dict[str, str]:
        """Every parameter name -> its layer group (`embeddings`, `block.i`, `neck`, `head`), in model order."""
        groups = {f"encoder.{name}": group for name, group in self.adapter.parameter_groups().items()}
        groups.update({f"head.{name}": HEAD_GROUP for name, _ in self.head.named_parameters()})
        return groups

    def untouched_prefix_blocks(self, parameter_names: Any) -> int | None:
        """How many leading encoder blocks have no parameter among ``parameter_names``.

        Their output (after the embeddings) does not depend on the coefficients, so it can be computed once per
        image. `None` when even the embeddings are among the parameters: nothing can be cached.
        """
        touched = {self.parameter_groups()[n] for n in parameter_names}
        if "embeddings" in touched:
            return None
        count = 0
        while count < self.adapter.num_blocks and f"block.{count}" not in touched:
            count += 1
        return count

    @property
    def image_processor(self) -> Any:
        """The image processor saved beside the model, or a deterministic default for its encoder."""
        if self._image_processor is None:
            self._image_processor = default_image_processor(cast(PreTrainedConfig, self.config.encoder_config))
        return self._image_processor

    @image_processor.setter
    def image_processor(self, processor: Any) -> None:
        self._image_processor = processor

    # -- computation -----------------------------------------------------------------------------------------
    def encode_prefix(self, pixel_values: torch.Tensor, num_blocks: int) -> torch.Tensor:
        """Hidden state after the embeddings and the first ``num_blocks`` blocks (for prefix caching)."""
        adapter = self.adapter
        return adapter.forward_blocks(adapter.embed(pixel_values), 0, num_blocks)

    def scores_from_distribution(self, distribution: torch.Tensor) -> torch.Tensor:
        """Expected bin (1..num_bins) mapped linearly onto `config.score_range`."""
        bins = torch.arange(1, self.config.num_bins + 1, dtype=distribution.dtype, device=distribution.device)
        expected = (distribution * bins).sum(dim=-1)
        low, high = self.config.score_range
        return low + (expected - 1.0) / (self.config.num_bins - 1) * (high - low)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prefix_hidden: torch.Tensor | None = None,
        prefix_blocks: int = 0,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> AestheticModelOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `[B, C, H, W]`): preprocessed images.
            labels (`torch.Tensor`, *optional*): `[B]` scores on `config.score_range` (MSE of normalised scores) or
                `[B, num_bins]` vote histograms (EMD, r = 2).
            prefix_hidden (`torch.Tensor`, *optional*): the output of `encode_prefix(pixel_values, prefix_blocks)`,
                used instead of `pixel_values` to skip a frozen prefix.
            prefix_blocks (`int`): how many blocks `prefix_hidden` has already been through.
            output_hidden_states (`bool`, `int` or `list[int]`, *optional*, defaults to
                `config.output_hidden_states`): also return the encoder's hidden states; indices (negative ones
                count from the end) keep only those, the others are `None`.
            output_attentions (`bool`, *optional*, defaults to `config.output_attentions`): also return the
                encoder's attention weights.
            return_dict (`bool`, *optional*, defaults to `config.return_dict`): return an [`AestheticModelOutput`]
                rather than a tuple of its non-empty fields.
        """
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict
        if self._scores_as_ensemble():  # a personalized output ensemble: T task models' scores, weighed
            if labels is not None or output_hidden_states or output_attentions:
                raise InputError(
                    "a model that scores as an output ensemble returns scores only: no labels, hidden states or "
                    "attentions (those are one network's)"
                )
            output = AestheticModelOutput(scores=self._ensemble_scores(pixel_values, prefix_hidden, prefix_blocks))
            return output if return_dict else output.to_tuple()
        adapter = self.adapter
        with adapter.recording_attentions(output_attentions) as attentions:
            if prefix_hidden is not None:
                hidden, start = prefix_hidden, prefix_blocks
            elif pixel_values is not None:
                hidden, start = adapter.embed(pixel_values), 0
            else:
                raise InputError("forward needs pixel_values or prefix_hidden, received neither")
            # Kept only when asked for (an index 0 is a request): otherwise each block's output is freed.
            keep = output_hidden_states is not None and output_hidden_states is not False
            hidden_states = [hidden]
            # In training mode the encoder's layers checkpoint themselves (see `_set_gradient_checkpointing`).
            checkpointing = self.gradient_checkpointing and torch.is_grad_enabled() and not self.training
            every = getattr(self, "_checkpoint_every", 1)
            for index in range(start, adapter.num_blocks):
                if checkpointing and (index - start) % every == 0:
                    # Only the block's input is kept; the block runs again in the backward pass.
                    run = getattr(self, "_gradient_checkpointing_func", None) or partial(
                        checkpoint, use_reentrant=False
                    )
                    hidden = run(adapter.run_block, index, hidden)
                else:
                    hidden = adapter.run_block(index, hidden)
                if keep:
                    hidden_states.append(hidden)
        features = adapter.pool(hidden)
        distribution = self.head(features)
        scores = self.scores_from_distribution(distribution)
        loss = None if labels is None else self._loss(scores, distribution, labels)
        output = AestheticModelOutput(
            loss=loss,
            scores=scores,
            distribution=distribution,
            features=features,
            hidden_states=_select(hidden_states, output_hidden_states),
            attentions=tuple(attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _loss(self, scores: torch.Tensor, distribution: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(distribution.dtype)
        if labels.dim() == 2 and labels.shape[-1] == self.config.num_bins:
            return emd_loss(distribution, labels)
        if labels.dim() == 1 and labels.shape[0] == scores.shape[0]:
            low, high = self.config.score_range
            return torch.mean(((scores - labels) / (high - low)) ** 2)
        raise InputError(
            f"labels must be [B] scores or [B, {self.config.num_bins}] histograms, received {list(labels.shape)}"
        )

    @torch.no_grad()
    def score(
        self,
        images: ImageInput,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Score images: PIL images, file paths, a folder of images, or a tensor of preprocessed pixel values.

        Runs in eval mode (deterministic preprocessing, no dropout) in batches, and applies the user's calibration
        when the model was personalized with one.

        Args:
            device: where to run (`"auto"`: a GPU when there is one); by default where the model is. The model moves
                there for the call and back afterwards.

        Returns:
            `torch.Tensor` of shape `[N]` (float32, on the CPU), in input order (a folder: sorted by file name).
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, received {batch_size}")
        items = collect_images(images)
        was_training = self.training
        self.eval()
        home = next(self.parameters()).device
        device = resolve_device(device) if device is not None else home
        moved = device != home
        if moved:
            self.to(device)  # type: ignore[arg-type]  # for the call only (transformers types `to` as taking a model)
        results = []
        try:
            for start in tqdm(range(0, len(items), batch_size), desc="Scoring", unit="batch", disable=not progress):
                batch = items[start : start + batch_size]
                if isinstance(batch, torch.Tensor):
                    pixels = batch
                else:
                    opened = [open_image(item, f" #{start + i}") for i, item in enumerate(batch)]
                    pixels = self.image_processor(images=opened, return_tensors="pt")["pixel_values"]
                dtype = next(self.parameters()).dtype
                pixels = pixels.to(device=device, dtype=dtype)
                results.append(self(pixel_values=pixels, return_dict=True).scores.float().cpu())
        finally:
            self.train(was_training)
            if moved:
                self.to(home)  # type: ignore[arg-type]  # transformers types `to` as taking a model
        return self.calibrate(torch.cat(results))

    def calibrate(self, scores: torch.Tensor) -> torch.Tensor:
        """Map scores onto the user's rating scale when the personalization stored a calibration."""
        calibration = (getattr(self.personalization, "info", None) or {}).get("calibration")
        if not calibration:
            return scores
        return scores * float(calibration["slope"]) + float(calibration["intercept"])

    # -- saving and loading ----------------------------------------------------------------------------------
    def save_pretrained(  # type: ignore[override]  # transformers' arguments, plus `export` and `overwrite_card`
        self,
        save_directory: str | Path,
        *args: Any,
        export: str | None = None,
        overwrite_card: bool = False,
        **kwargs: Any,
    ) -> None:
        """Save the model, with a model card (`README.md`). The model itself is not changed.

        Args:
            save_directory: target folder.
            export: `"merged"` (the default) writes standalone weights (`config.json`, `model.safetensors`,
                `preprocessor_config.json`); `"coefficients"` (personalized models only) writes the kilobyte-sized
                coefficients-only format that points at the base model and bank by location, revision and
                fingerprint. A model that scores as an output ensemble has no merged weights: it saves as
                `"ensemble"` (the ensemble's weights with the same references) by default or when asked for
                `"coefficients"`.
            overwrite_card: replace a `README.md` in the folder that a person wrote (a generated card is always
                regenerated).
            push_to_hub: also push the model with [`push_to_hub`] (`repo_id`, `private`, `token`, `revision` and
                `commit_message` are taken from the keyword arguments; the repo id defaults to the folder name).
        """
        export = resolve_export(self, export)
        if kwargs.pop("push_to_hub", False):
            push = {k: kwargs.pop(k) for k in ("private", "token", "revision", "commit_message") if k in kwargs}
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            self.save_pretrained(save_directory, *args, export=export, overwrite_card=overwrite_card, **kwargs)
            self.push_to_hub(repo_id, export=export, overwrite_card=overwrite_card, **push)
            return
        # One transaction: the folder holds the old model or the new one, never a mix, and no stale files.
        self._save_export(
            save_directory,
            export,
            lambda folder: super(AestheticModel, self).save_pretrained(folder, *args, **kwargs),
            overwrite_card=overwrite_card,
        )

    # -- the Hub -----------------------------------------------------------------------------------------------
    hub_name = "model"
    # Files a push replaces: stale ones from an earlier push (e.g. a merged export before a coefficients one) go away.
    hub_replaces = ("model*.safetensors", WEIGHTS_INDEX_FILE, COEFFICIENTS_FILE, ENSEMBLE_FILE, PERSONALIZATION_FILE)

    def hub_description(self, export: str = MERGED, **options: Any) -> str:
        return "model" if self.personalization is None else f"personalized model ({export})"

    def push_to_hub(  # type: ignore[override]  # `HubMixin.push_to_hub`, plus `export`
        self, repo_id: str, *, export: str | None = None, **kwargs: Any
    ) -> CommitInfo:
        """Upload the model with its card to a Hub repository (created if missing) in one commit.

        Afterwards `self.source` is a [`Reference`] to the repository at the new commit, so models personalized from
        a pushed base refer to it by repo id and pinned revision. The other arguments (`private`, `token`,
        `revision`, `commit_message`, `overwrite_card`, `license`, `card`) are those of [`HubMixin.push_to_hub`].

        Args:
            repo_id: `"user/name"` (or `"name"` in your namespace).
            export: `"merged"` (standalone weights, the default), `"coefficients"` (personalized models whose base
                and bank are on the Hub: a few kilobytes that resolve them at their pinned revisions) or
                `"ensemble"` (the same for a model that scores as an output ensemble, its default; it is also what
                `"coefficients"` writes for such a model).

        Returns:
            `huggingface_hub.CommitInfo`: the commit (a `str` holding its url; `.oid` is the commit sha).
        """
        export = resolve_export(self, export)
        if export in (COEFFICIENTS, ENSEMBLE):
            self._check_shareable()  # before anything is created on the Hub
        return super().push_to_hub(repo_id, export=export, **kwargs)

    def generate_model_card(
        self, repo_id: str | None = None, license: str | None = None, export: str = MERGED, **options: Any
    ) -> ModelCard:
        """The card of this base model, or of this personalized model saved as ``export``.

        Args:
            repo_id: where the card will live (used in the code examples); by default a placeholder folder name.
            license: the `license` metadata (default `other`: the weights derive from research databases).
            export: how a personalized model is saved; `base_model_relation` is `adapter` for coefficients, `merge`
                for merged weights.
        """
        license = license or DEFAULT_LICENSE
        if self.personalization is None:
            return self._base_card(repo_id, license)
        return self._personalized_card(export, repo_id, license)

    def _base_card(self, repo_id: str | None, license: str) -> ModelCard:
        config = self.config
        encoder_type = cast(PreTrainedConfig, config.encoder_config).model_type
        tags = ["image-aesthetics", "image-quality-assessment", LIBRARY_NAME, encoder_type]
        bank = config.bank_reference
        return render_card(
            "base_model.md",
            ModelCardData(library_name=LIBRARY_NAME, license=license, tags=tags),
            title=card_title(repo_id, "Aesthetic scorer"),
            location=repo_id or "path/to/model",
            encoder_type=encoder_type,
            encoder_params=count(self.encoder.num_parameters()),
            head_params=count(sum(p.numel() for p in self.head.parameters())),
            feature_dim=self.adapter.feature_dim,
            num_blocks=self.adapter.num_blocks,
            hidden_size=config.head_hidden_size,
            dropout=config.head_dropout,
            num_bins=config.num_bins,
            score_range=config.score_range,
            fingerprint=model_fingerprint(self),
            bank_location=bank.repo_id if bank and bank.on_hub else None,
            paper=PAPER,
        )

    # -- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(  # type: ignore[override]  # transformers' arguments, passed on as keywords
        cls, pretrained_model_name_or_path: str | Path | None, *model_args: Any, **kwargs: Any
    ) -> Any:
        """Load a base or merged model, or resolve a coefficients-only export into its merged model.

        Takes the arguments of `PreTrainedModel.from_pretrained`, including `subfolder` (the config, weights, image
        processor and `personalization.json` are all read from it) and `output_loading_info=True` (returns
        `(model, loading_info)`). A coefficients export loads its base model and bank from the recorded locations
        and revisions, checks both fingerprints, and merges. A missing or mismatched base or bank is an error.
        """

        def load() -> AestheticModel:
            return cls._load(pretrained_model_name_or_path, *model_args, **kwargs)

        # None: the weights come as `state_dict=` with a `config=`; there is no folder to read.
        location = pretrained_model_name_or_path
        hub_kwargs: dict[str, Any] = {k: kwargs.get(k) for k in ("revision", "token", "cache_dir", "local_files_only")}
        # A name that is neither a folder nor a Hub repository fails here, at once, naming both.
        local = None if location is None else locate(location, "model", **hub_kwargs)
        if local is None:
            return load()
        # A save swaps a whole folder in; read again if that happened while this load read its files.
        return read_consistently(local, load)


AutoConfig.register(AestheticConfig.model_type, AestheticConfig, exist_ok=True)
AutoModel.register(AestheticConfig, AestheticModel, exist_ok=True)
