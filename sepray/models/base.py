"""The interface every separator in the registry implements.

A separator maps a mixture ``(batch, audio_channels, time_in)`` to one estimate per source.
Geometry (what chunked inference and the data pipeline rely on):

* ``output_length(input_length)`` -> output samples for an input length (``ValueError`` if invalid).
* ``input_length(output_length)`` -> smallest valid input length whose output is >= ``output_length``.
* Valid-convolution models (``halo == 0``): output sample ``j`` lines up with input sample
  ``j + (input_length - output_length) // 2`` (symmetric context, extra sample on the right).
* Same-padding models (``halo > 0``): output length == input length; an output sample further than
  ``halo`` input samples from either end of the input does not depend on where the input was cut.
* ``step``: input offsets must be multiples of ``step`` for outputs to line up exactly (decimation).

Heads:
* ``head == "regression"``: ``forward`` returns waveforms ``(batch, sources, audio_channels, time_out)``.
* ``head == "mulaw"``: ``forward`` returns logits ``(batch, 256, sources, audio_channels, time_out)``,
  ready for ``F.cross_entropy(logits, mu_law_encode(target))``.
``decode(output)`` always returns waveforms ``(batch, sources, audio_channels, time_out)`` in [-1, 1]; for a
regression head it only clamps, and file separation (``sepray.separate.separate_stream``) skips it so that
estimates that sum to the mixture still do beyond full scale.

Training (what the one training loop in ``sepray/train.py`` calls; the default is the plain separation loss):

* ``training_loss(mix, target, domains, reconstruction, forward)`` -> :class:`TrainingLoss`: the scalar to
  backpropagate and detached extra scalars logged as ``train_<key>`` (the keys of ``sepray.names.TRAIN_EXTRAS``).
  ``reconstruction(output, target)`` is the run's separation loss; ``forward`` the (possibly data-parallel)
  forward the default uses; ``domains`` (B,) int64 the crops' domain labels (None unless ``uses_domains``).
* ``validation_output(mix, target, forward)``: the output scored on the validation crops (default ``forward(mix)``).
* ``uses_domains``: True when ``training_loss`` needs domain labels (at least two domains in the data).
* ``sequential_steps(output_length)``: model steps that must run one after another for one call with that
  output (0: one parallel pass); ``step_progress``, when set, is called with the number of steps done.

Export (what ``sepray export`` and the exported engines of ``sepray separate`` call, :mod:`sepray.export`):

* ``graph_cut()`` -> :class:`GraphCut`: the part of the model an exporter takes as one graph (one tensor in, one
  tensor out, dynamic batch and length), and the valid lengths of its input's time axis.
* ``graph_input(mix)`` -> ``(graph input, state)``: what runs before the graph (the STFT); ``graph_finish(output,
  state)`` -> waveforms (B, S, C, T): what runs after it (masking, the iSTFT). For every model
  ``graph_finish(graph_cut().core(x), state) == waveforms(forward(mix))`` with ``x, state = graph_input(mix)``:
  a mu-law head's output decoded, a regression head's unclamped. The default cut is all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from sepray.dsp import istft, stft


class TrainingLoss(NamedTuple):
    """What :meth:`Separator.training_loss` returns: ``loss`` (scalar with a graph) and ``extras``, detached
    scalars by key (``confusion_loss``, ``domain_accuracy``), logged as their own metrics."""

    loss: torch.Tensor
    extras: dict[str, torch.Tensor]


class GraphCut(NamedTuple):
    """The exportable part of a separator: ``core`` maps one tensor (batch first) to one tensor; the graph input's
    ``time_axis`` takes the lengths ``min_length + k * length_step`` (k >= 0), every batch size >= 1.

    Valid-convolution models (``halo == 0``) start at the input of two output samples: traced code may treat a
    single output sample specially. A shorter input is padded on the right to ``input_length(2)`` and the output
    cropped (exact: an output sample depends only on the input samples under it)."""

    core: nn.Module
    time_axis: int
    min_length: int
    length_step: int


class WaveformForward(nn.Module):
    """A separator's forward as waveforms: mix (B, C, T) -> (B, S, C, T_out); a mu-law head's logits decoded, a
    regression head's waveforms as they are (its ``decode`` only clamps them)."""

    def __init__(self, model: Separator) -> None:
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.model.waveforms(self.model(mix))


class Separator(nn.Module):
    """Base class: subclasses set ``config`` and implement forward / geometry."""

    head: str = "regression"
    step: int = 1
    halo: int = 0
    uses_domains: bool = False
    step_progress: Callable[[int], None] | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.config.sources)

    @property
    def audio_channels(self) -> int:
        return int(self.config.audio_channels)

    def output_length(self, input_length: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def input_length(self, output_length: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def receptive_field(self) -> int:
        """Input samples that influence one output sample (valid models) or 2 * halo + 1."""
        if self.halo:
            return 2 * self.halo + 1
        n_in = self.input_length(1)
        return n_in - self.output_length(n_in) + 1

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Head output -> waveforms (batch, sources, audio_channels, time_out)."""
        return output

    def training_loss(
        self,
        mix: torch.Tensor,
        target: torch.Tensor,
        domains: torch.Tensor | None,
        reconstruction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> TrainingLoss:
        """mix (B, C, T_in), target (B, S, C, T_out), domains (B,) or None -> the loss of one training step."""
        output = (forward or self)(mix)
        return TrainingLoss(reconstruction(output, target), {})

    def validation_output(
        self,
        mix: torch.Tensor,
        target: torch.Tensor | None,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The head output scored on validation crops: ``forward(mix)``."""
        return (forward or self)(mix)

    def sequential_steps(self, output_length: int) -> int:
        """Steps run one after another in one call producing ``output_length`` samples; 0 = one pass."""
        return 0

    def waveforms(self, output: torch.Tensor) -> torch.Tensor:
        """Head output -> waveforms (B, S, C, T): ``decode`` for a mu-law head; a regression head's output as it is."""
        return self.decode(output) if self.head == "mulaw" else output

    def graph_cut(self) -> GraphCut:
        """All of ``waveforms(forward(mix))``: mix (B, C, T) at the model's valid lengths -> waveforms (valid
        models: from the shortest input with two output samples on; see :attr:`GraphCut.min_length`)."""
        return GraphCut(WaveformForward(self), 2, self.input_length(2 if self.halo == 0 else 1), self.step)

    def graph_input(self, mix: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """mix (B, C, T) -> (the graph's input, state for :meth:`graph_finish`); the default: (mix, None)."""
        return mix, None

    def graph_finish(self, output: torch.Tensor, state: Any) -> torch.Tensor:
        """The graph's output and :meth:`graph_input`'s state -> waveforms (B, S, C, T); the default: output."""
        return output

    def check_input(self, mix: torch.Tensor) -> None:
        """Raise ValueError naming the shape unless ``mix`` is (batch, audio_channels, valid time)."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(
                f"{type(self).__name__}: expected a (batch, {self.audio_channels}, time) tensor, "
                f"got shape {tuple(mix.shape)}"
            )
        try:
            self.output_length(mix.shape[-1])
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: input shape {tuple(mix.shape)}: {exc}") from None


class ContextSeparator(Separator):
    """A valid-convolution separator with step 1: its output is its input less ``context`` samples."""

    @property
    def context(self) -> int:  # pragma: no cover - interface
        """Receptive field - 1: input samples lost between input and output."""
        raise NotImplementedError

    def output_length(self, input_length: int) -> int:
        out = input_length - self.context
        if out < 1:
            raise ValueError(
                f"input length {input_length} is shorter than the receptive field {self.context + 1}"
            )
        return out

    def input_length(self, output_length: int) -> int:
        return max(output_length, 1) + self.context


class STFTSeparator(Separator):
    """A separator working on the STFT of its input (``config.n_fft``, ``config.hop``): output length == input
    length, which must be a multiple of ``hop`` longer than ``n_fft // 2`` (the STFT's reflect pad).

    Subclasses implement ``masks(mag)``: mixture magnitudes (B, C, bins, N) -> masks (B, S, C, bins, N), and may
    override ``synthesize`` (masks and mixture STFT -> waveforms). ``forward`` is ``synthesize(masks(|STFT|))``;
    the exported graph is ``masks`` alone (the STFT and iSTFT run outside it)."""

    def masks(self, mag: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def synthesize(self, masks: torch.Tensor, spec: torch.Tensor, length: int) -> torch.Tensor:
        """masks (B, S, C, bins, N), mixture STFT (B, C, bins, N) -> waveforms (B, S, C, length) (mixture phase)."""
        return istft(masks * spec.unsqueeze(1), self.config.n_fft, self.config.hop, length=length)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, S, C, T)."""
        self.check_input(mix)
        spec = stft(mix, self.config.n_fft, self.config.hop)  # (B, C, bins, N)
        return self.synthesize(self.masks(spec.abs()), spec, mix.shape[-1])

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, S, C, T) -> the same clamped to [-1, 1]."""
        return output.clamp(-1.0, 1.0)

    def graph_cut(self) -> GraphCut:
        """``masks``: magnitudes (B, C, bins, N) -> masks (B, S, C, bins, N), N >= the frames of the shortest input."""
        return GraphCut(_Masks(self), 3, self.min_length // self.config.hop + 1, 1)

    def graph_input(self, mix: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """mix (B, C, T) -> (magnitudes (B, C, bins, N), (STFT, T))."""
        self.check_input(mix)
        spec = stft(mix, self.config.n_fft, self.config.hop)
        return spec.abs(), (spec, mix.shape[-1])

    def graph_finish(self, output: torch.Tensor, state: Any) -> torch.Tensor:
        """masks (B, S, C, bins, N) -> waveforms (B, S, C, T), unclamped."""
        spec, length = state
        return self.synthesize(output, spec, length)

    @property
    def min_length(self) -> int:
        """Shortest input: the smallest multiple of ``hop`` longer than ``n_fft // 2``."""
        return self.config.hop * (self.config.n_fft // 2 // self.config.hop + 1)

    def output_length(self, input_length: int) -> int:
        hop = self.config.hop
        if input_length < self.min_length or input_length % hop:
            raise ValueError(
                f"input length {input_length} must be a multiple of hop {hop} and >= {self.min_length}"
            )
        return input_length

    def input_length(self, output_length: int) -> int:
        hop = self.config.hop
        return max(self.min_length, hop * -(-output_length // hop))


class _Masks(nn.Module):
    """An STFT separator's ``masks`` as a module: magnitudes (B, C, bins, N) -> masks (B, S, C, bins, N)."""

    def __init__(self, model: STFTSeparator) -> None:
        super().__init__()
        self.model = model

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        return self.model.masks(mag)
