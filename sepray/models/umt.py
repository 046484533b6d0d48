"""Universal Music Translation network (Mor et al. 2018) as a separator: mix in, source(s) out.

Encoder (:class:`~sepray.models.encoder.DilatedEncoder`): mix -> input conv (``input_kernel``) ->
``encoder_blocks x encoder_layers_per_block`` non-causal ReLU dilated residual layers -> 1x1 to
``latent_channels`` -> average pooling over ``pool`` samples (800 = 50 ms at 16 kHz; 1 = none) = the latent
``(B, latent_channels, frames)``; :meth:`UMT.upsample` repeats every frame ``pool`` times (nearest neighbour).

Domain confusion: a :class:`~sepray.models.confusion.DomainClassifier` on the latent; :meth:`UMT.confusion_loss`
implements ``confusion_mode`` ``adversarial`` or ``reversal`` with ``confusion_weight`` (0 = off).

Decoder (``decoder``), conditioned on the upsampled latent, which enters every layer through its own 1x1 conv:

* ``separator``: non-causal gated WaveNet (valid convolutions) that predicts the target sources from the latent
  in one pass: ``forward(mix)`` -> logits (B, 256, S, C, T_out) or tanh waveforms (B, S, C, T_out).
* ``autoregressive``: causal gated WaveNet over the mu-law target
  (:class:`~sepray.models.umt_decoder.CausalWaveNetDecoder`). Training is teacher-forced,
  ``forward_teacher(mix, target)``; inference generates sample by sample, ``generate(mix, ...)``.

Geometry (valid convolutions, ``halo = 0``): the encoder loses ``encoder context`` samples, the pooled length
``input_length - encoder context`` must be a multiple of ``pool``, and the separator decoder loses its own
context; output sample ``j`` is centred on input sample ``j + (input_length - output_length) // 2``.
``step = pool``: chunks must start at multiples of ``pool`` so that the pooling frames line up. In
``autoregressive`` mode the decoder is causal with silent history at the start of each call, so chunked
generation is exact only within a chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sepray.dsp import MU_LAW_CLASSES, mu_law_class_values, mu_law_encode
from sepray.errors import ExportError
from sepray.models.base import GraphCut, Separator, TrainingLoss
from sepray.models.checks import check_at_least, check_choices, check_odd, check_sources
from sepray.models.confusion import DomainClassifier, reverse_gradient
from sepray.models.encoder import INPUTS, DilatedEncoder
from sepray.models.generation import MODES, cached_generate, naive_generate, segmented_generate
from sepray.models.heads import DECODE_MODES, HEADS, SkipHead, decode_output
from sepray.models.layers import DilatedResidualStack, pointwise
from sepray.models.umt_decoder import CausalWaveNetDecoder, shifted_inputs

DECODERS = ("separator", "autoregressive")
GENERATION_SEGMENT_FRAMES = 20  # latent frames generated as one sequence (1 s at pool 800 and 16 kHz)
CONFUSION_MODES = ("adversarial", "reversal")


@dataclass(frozen=True)
class UMTConfig:
    """UMT separator; defaults are the reference sizes (encoder 3 x 10, latent 64, pool 800, decoder 4 x 10)."""

    sources: tuple[str, ...] = ("vocals", "accompaniment")
    audio_channels: int = 1
    input: str = "mulaw"  # encoder input: mulaw (continuous companding) | raw
    head: str = "mulaw"  # mulaw (256 logits) | regression (tanh waveform; separator decoder only)
    decode_mode: str = "expectation"  # mulaw head: expectation | argmax
    decoder: str = "separator"  # separator (non-causal, one pass) | autoregressive (causal, teacher forcing)
    input_kernel: int = 3  # odd
    encoder_blocks: int = 3
    encoder_layers_per_block: int = 10
    encoder_channels: int = 128
    kernel_size: int = 3  # odd; every dilated conv of the encoder and decoder
    dilation_base: int = 2  # dilation of layer i in a block: dilation_base ** i
    latent_channels: int = 64
    pool: int = 800  # average pooling of the latent, in samples (800 = 50 ms at 16 kHz); 1 = none
    num_domains: int = 2
    classifier_channels: int = 100
    classifier_layers: int = 3
    confusion_mode: str = "adversarial"  # adversarial (original, alternating) | reversal (gradient reversal)
    confusion_weight: float = 0.01  # lambda; 0 = no confusion loss
    decoder_blocks: int = 4
    decoder_layers_per_block: int = 10
    residual_channels: int = 128
    skip_channels: int = 128
    end_channels: int = 128
    decoder_input_kernel: int = 2  # autoregressive decoder: causal input conv over the previous samples
    generation_mode: str = "argmax"  # forward(mix) in autoregressive mode: argmax | sample
    temperature: float = 1.0  # sampling temperature (generation_mode == "sample")

    def __post_init__(self) -> None:
        check_sources(self)
        check_choices(self, {
            "input": INPUTS, "head": HEADS, "decode_mode": DECODE_MODES, "decoder": DECODERS,
            "confusion_mode": CONFUSION_MODES, "generation_mode": MODES,
        })  # fmt: skip
        if self.decoder == "autoregressive" and self.head != "mulaw":
            raise ValueError("the autoregressive decoder needs head 'mulaw' (it generates mu-law classes)")
        check_at_least(self, (
            "encoder_blocks", "encoder_layers_per_block", "encoder_channels", "dilation_base", "latent_channels",
            "pool", "classifier_channels", "classifier_layers", "decoder_blocks", "decoder_layers_per_block",
            "residual_channels", "skip_channels", "end_channels", "decoder_input_kernel",
        ))  # fmt: skip
        check_at_least(self, ("num_domains",), 2)
        check_odd(self, ("kernel_size", "input_kernel"))
        if not (self.confusion_weight >= 0 and math.isfinite(self.confusion_weight)):
            raise ValueError(f"confusion_weight must be finite and >= 0, got {self.confusion_weight}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class ConfusionLoss(NamedTuple):
    """What :meth:`UMT.confusion_loss` returns (scalars).

    ``model``: add to the reconstruction loss; its gradient reaches the encoder only (never the classifier).
    ``classifier``: the classifier's own loss (adversarial mode; None in reversal mode, where ``model`` trains
    the classifier too). ``accuracy``: the classifier's accuracy on the batch (detached, for logging).
    """

    model: torch.Tensor
    classifier: torch.Tensor | None
    accuracy: torch.Tensor


class UMT(Separator):
    """mix (B, C, T) -> logits (B, 256, S, C, T_out) or waveforms (B, S, C, T_out); see the module docstring."""

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.config = config
        self.head = config.head
        self.step = config.pool
        self.uses_domains = config.confusion_weight > 0
        # autoregressive inference: the output is generated as independent segments of this many samples side
        # by side in one batch (each from silent history); None = one sequence per call (exact, slower)
        self.generation_segment: int | None = GENERATION_SEGMENT_FRAMES * config.pool
        self.encoder = DilatedEncoder(
            config.audio_channels,
            config.input,
            config.input_kernel,
            config.encoder_channels,
            config.encoder_blocks,
            config.encoder_layers_per_block,
            config.kernel_size,
            config.dilation_base,
            activation="relu",
            latent_channels=config.latent_channels,
        )
        self.classifier = DomainClassifier(
            config.latent_channels, config.num_domains, config.classifier_channels, config.classifier_layers
        )
        outputs = len(config.sources) * config.audio_channels
        if config.decoder == "separator":
            self.expand = nn.Conv1d(config.latent_channels, config.residual_channels, 1)
            self.decoder = DilatedResidualStack(
                config.residual_channels,
                config.decoder_blocks,
                config.decoder_layers_per_block,
                kernel_size=config.kernel_size,
                dilation_base=config.dilation_base,
                skip_channels=config.skip_channels,
                activation="gated",
                cond_channels=config.latent_channels,
                final_residual=False,
            )
            self.output_head = SkipHead(
                config.skip_channels, config.end_channels, len(config.sources), config.audio_channels,
                config.head, config.decode_mode,
            )  # fmt: skip
            self.decoder_context = self.decoder.context
        else:
            self.decoder = CausalWaveNetDecoder(
                outputs,
                config.latent_channels,
                config.residual_channels,
                config.skip_channels,
                config.end_channels,
                config.decoder_blocks,
                config.decoder_layers_per_block,
                config.kernel_size,
                config.dilation_base,
                config.decoder_input_kernel,
            )
            self.decoder_context = 0  # causal with silent history: one output per latent sample
        self.register_buffer("class_values", mu_law_class_values(), persistent=False)

    # ---- geometry ----------------------------------------------------------------------------------------

    def output_length(self, input_length: int) -> int:
        encoded = input_length - self.encoder.context
        if encoded < self.config.pool or encoded % self.config.pool:
            raise ValueError(
                f"input length {input_length} minus the encoder context {self.encoder.context} must be a positive "
                f"multiple of pool {self.config.pool}"
            )
        out = encoded - self.decoder_context
        if out < 1:
            raise ValueError(f"input length {input_length} is shorter than the receptive field")
        return out

    def input_length(self, output_length: int) -> int:
        frames = -(-(max(output_length, 1) + self.decoder_context) // self.config.pool)
        return frames * self.config.pool + self.encoder.context

    # ---- encoder and domain confusion ---------------------------------------------------------------------

    def encode(self, mix: torch.Tensor) -> torch.Tensor:
        """mix (B, C, T) -> latent (B, latent_channels, (T - encoder context) // pool)."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(
                f"UMT.encode: expected (batch, {self.audio_channels}, time), got shape {tuple(mix.shape)}"
            )
        latent = self.encoder(mix)  # (B, latent, T - encoder context)
        pool = self.config.pool
        return latent if pool == 1 else F.avg_pool1d(latent, pool, pool)

    def upsample(self, latent: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour upsampling to the audio rate: (B, L, frames) -> (B, L, frames * pool)."""
        return latent if self.config.pool == 1 else latent.repeat_interleave(self.config.pool, dim=-1)

    def domain_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, latent_channels, frames) -> domain logits (B, num_domains)."""
        return self.classifier(latent)

    def confusion_loss(self, latent: torch.Tensor, domains: torch.Tensor) -> ConfusionLoss:
        """Domain confusion for a latent (B, latent_channels, frames) and its domains (B,) int64.

        With ``w = confusion_weight`` and ``CE`` the classifier's cross-entropy:

        * ``adversarial`` (the original's alternating updates): ``classifier = w * CE`` on the *detached* latent
          (gradient only into the classifier) and ``model = -w * CE`` through a frozen copy of the classifier
          (gradient only into the encoder): the encoder learns to fool the classifier. A training loop either
          alternates (step the classifier's optimizer on ``classifier``, then the encoder/decoder optimizer on
          ``reconstruction + model``) or backpropagates ``reconstruction + model + classifier`` once.
        * ``reversal``: ``model = w * CE`` through :func:`reverse_gradient`: the classifier gets ``+w dCE`` and the
          encoder ``-w dCE`` from one backward pass of ``reconstruction + model``; ``classifier`` is None.
        * ``w == 0``: ``model`` is a zero scalar (no gradient), ``classifier`` None.
        """
        if domains.shape != (latent.shape[0],):
            raise ValueError(f"domains must be (batch,) = ({latent.shape[0]},), got {tuple(domains.shape)}")
        weight, mode = self.config.confusion_weight, self.config.confusion_mode
        if weight == 0:
            with torch.no_grad():
                accuracy = (self.domain_logits(latent).argmax(-1) == domains).float().mean()
            return ConfusionLoss(latent.new_zeros(()), None, accuracy)
        if mode == "reversal":
            logits = self.domain_logits(reverse_gradient(latent))
            model, classifier = weight * F.cross_entropy(logits, domains), None
        else:
            logits = self.domain_logits(latent.detach())
            classifier = weight * F.cross_entropy(logits, domains)
            frozen = {name: p.detach() for name, p in self.classifier.named_parameters()}
            model = -weight * F.cross_entropy(functional_call(self.classifier, frozen, (latent,)), domains)
        accuracy = (logits.detach().argmax(-1) == domains).float().mean()
        return ConfusionLoss(model, classifier, accuracy)

    def classifier_parameters(self) -> list[nn.Parameter]:
        """The domain classifier's parameters (its own optimizer in adversarial training)."""
        return list(self.classifier.parameters())

    def separator_parameters(self) -> list[nn.Parameter]:
        """Encoder and decoder parameters: everything but the domain classifier."""
        skip = {id(p) for p in self.classifier.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    # ---- decoder -----------------------------------------------------------------------------------------

    def forward_with_latent(
        self, mix: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, latent): ``forward(mix)`` / ``forward_teacher(mix, target)`` and the latent (B, L, frames),
        so that a training loop encodes once for both the reconstruction and the confusion loss."""
        self.check_input(mix)
        latent = self.encode(mix)  # (B, L, frames)
        cond = self.upsample(latent)  # (B, L, frames * pool)
        if self.config.decoder == "separator":
            if target is not None:
                raise ValueError("the separator decoder is not teacher-forced; call forward(mix)")
            _, skip = self.decoder(pointwise(self.expand, cond), cond)  # (B, skip, T_out)
            return self.output_head(skip), latent
        if target is None:
            classes = self._generate(
                cond, self.config.generation_mode, self.config.temperature, None, "cached"
            )
        else:
            self._check_target(mix, target)
            classes = mu_law_encode(target).flatten(1, 2)  # (B, S * C, T_out)
        return self._teacher_logits(cond, classes), latent

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> mu-law logits (B, 256, S, C, T_out) or waveforms (B, S, C, T_out).

        ``autoregressive`` mode: generates (``generation_mode``, ``temperature``) and returns the teacher-forced
        logits of the generated classes, so ``decode`` with ``decode_mode="argmax"`` returns the argmax
        generation exactly. Training uses :meth:`forward_teacher` instead.
        """
        return self.forward_with_latent(mix)[0]

    def forward_teacher(self, mix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Teacher forcing (autoregressive mode): mix (B, C, T), target waveforms (B, S, C, T_out) aligned with
        the output (``T_out = output_length(T)``, centred like the data pipeline's target crops) -> logits
        (B, 256, S, C, T_out); logit ``t`` sees the target's mu-law classes before ``t`` only.
        ``sepray.losses.separation_loss("mulaw", logits, target)`` is the training loss."""
        if self.config.decoder != "autoregressive":
            raise ValueError("forward_teacher needs decoder 'autoregressive'")
        return self.forward_with_latent(mix, target)[0]

    def _check_target(self, mix: torch.Tensor, target: torch.Tensor) -> None:
        shape = (mix.shape[0], len(self.sources), self.audio_channels, self.output_length(mix.shape[-1]))
        if tuple(target.shape) != shape:
            raise ValueError(
                f"UMT: target must have shape {shape} for mix {tuple(mix.shape)}, got {tuple(target.shape)}"
            )

    def _teacher_logits(self, cond: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """cond (B, L, T), classes (B, S * C, T) -> logits (B, 256, S, C, T) of each class given those before."""
        logits = self.decoder(shifted_inputs(classes).to(cond.dtype), cond)  # (B, 256, S * C, T)
        return logits.view(logits.shape[0], MU_LAW_CLASSES, len(self.sources), self.audio_channels, -1)

    def _generate(self, cond, mode, temperature, generator, method) -> torch.Tensor:
        if method not in ("cached", "naive"):
            raise ValueError(f"method must be 'cached' or 'naive', got {method!r}")
        run = cached_generate if method == "cached" else naive_generate
        return segmented_generate(
            run, self.decoder, cond, self.generation_segment, mode, temperature, generator, self.step_progress
        )  # (B, S * C, T)

    # ---- the training loop's interface (sepray/models/base.py) ------------------------------------------

    def training_loss(self, mix, target, domains, reconstruction, forward=None) -> TrainingLoss:
        """Reconstruction (teacher-forced in autoregressive mode) plus the confusion terms, for one backward
        pass over all parameters: in adversarial mode the classifier term reaches only the classifier and the
        model term only the encoder (:meth:`confusion_loss`), so one optimizer does the alternating updates.
        Extras: ``confusion_loss`` (the classifier's cross-entropy) and ``domain_accuracy``. Ignores
        ``forward``: the latent is needed, so UMT trains on one device."""
        teacher = target if self.config.decoder == "autoregressive" else None
        output, latent = self.forward_with_latent(mix, teacher)
        loss = reconstruction(output, target)
        if not self.uses_domains or domains is None:
            return TrainingLoss(loss, {})
        conf = self.confusion_loss(latent, domains)
        classifier = conf.model if conf.classifier is None else conf.classifier
        total = loss + conf.model + (0.0 if conf.classifier is None else conf.classifier)
        extras = {
            "confusion_loss": classifier.detach() / self.config.confusion_weight,
            "domain_accuracy": conf.accuracy,
        }
        return TrainingLoss(total, extras)

    def validation_output(self, mix, target, forward=None) -> torch.Tensor:
        """Autoregressive mode: the teacher-forced logits when a target is given (generating every validation
        crop each epoch would dominate training); otherwise ``forward(mix)``."""
        if self.config.decoder == "autoregressive" and target is not None:
            return self.forward_teacher(mix, target)
        return (forward or self)(mix)

    def sequential_steps(self, output_length: int) -> int:
        """Autoregressive mode: samples generated one after another per call (the segment length)."""
        if self.config.decoder != "autoregressive":
            return 0
        return min(output_length, self.generation_segment or output_length)

    @torch.no_grad()
    def generate(
        self,
        mix: torch.Tensor,
        mode: str | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        method: str = "cached",
    ) -> torch.Tensor:
        """Autoregressive inference: mix (B, C, T) -> waveforms (B, S, C, T_out) in [-1, 1].

        ``mode`` argmax | sample and ``temperature`` default to the config; ``generator`` drives the random
        draws; ``method`` cached (per-layer queues, a CUDA graph on CUDA) | naive (the reference).
        """
        if self.config.decoder != "autoregressive":
            raise ValueError(
                "generate needs decoder 'autoregressive'; the separator decoder uses forward(mix)"
            )
        self.check_input(mix)
        cond = self.upsample(self.encode(mix))  # (B, L, T_out)
        mode = self.config.generation_mode if mode is None else mode
        temperature = self.config.temperature if temperature is None else temperature
        classes = self._generate(cond, mode, temperature, generator, method)
        return self.class_values[classes].view(mix.shape[0], len(self.sources), self.audio_channels, -1)

    def graph_cut(self) -> GraphCut:
        """The separator decoder exports whole; the autoregressive one cannot (ExportError)."""
        if self.config.decoder == "autoregressive":
            raise ExportError(
                "umt with decoder 'autoregressive' cannot be exported as a graph: it generates one sample at a "
                "time in a Python loop over cached per-layer queues; separate it with --engine torch"
            )
        return super().graph_cut()

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Logits (B, 256, S, C, T) or waveforms (B, S, C, T) -> waveforms (B, S, C, T) in [-1, 1]."""
        return decode_output(output, self.head, self.config.decode_mode, self.class_values)
