"""Sample-by-sample generation with :class:`~sepray.models.umt_decoder.CausalWaveNetDecoder`.

* :func:`naive_generate`: the reference. For every new sample it re-runs the whole causal decoder over the
  window of the last ``receptive_field`` inputs (growing from the first sample) and keeps the last output.
* :func:`cached_generate`: "Fast WaveNet" incremental generation. Every causal conv keeps a queue (a ring buffer
  tensor ``(B, C, span)``) of its past inputs, so one new sample costs one matrix product per layer, O(layers),
  instead of a pass over the receptive field. On CUDA the per-sample step can be captured once in a CUDA graph
  (``torch.cuda.CUDAGraph``) and replayed.

Both take the conditioning ``cond (B, cond_channels, T)`` for every output position, an optional ``prompt``
(``(B, outputs, P)`` classes: known first samples, e.g. the end of the previous chunk of a song) and return the
``T - P`` generated classes ``(B, outputs, T - P)`` (int64). ``mode="argmax"`` takes the most likely class;
``mode="sample"`` draws from ``softmax(logits / temperature)`` by inverse CDF with uniform numbers drawn up front
from ``generator`` (one ``torch.rand((B, outputs, T - P))`` call), so both generators consume the same draws and,
in exact arithmetic, return the same samples. The code is device-agnostic (the decoder's device and dtype).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sepray.dsp import MU_LAW_CLASSES
from sepray.models.umt_decoder import SILENCE_CLASS, CausalWaveNetDecoder, class_inputs, shifted_inputs

MODES = ("argmax", "sample")


def _check(decoder: CausalWaveNetDecoder, cond: torch.Tensor, prompt, mode: str, temperature: float) -> int:
    """Validate the arguments; return the prompt length."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "sample" and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if cond.dim() != 3:
        raise ValueError(f"cond must be (batch, cond_channels, time), got {tuple(cond.shape)}")
    if prompt is None:
        return 0
    if (
        prompt.dim() != 3
        or prompt.shape[:2] != (cond.shape[0], decoder.outputs)
        or prompt.shape[-1] > cond.shape[-1]
    ):
        raise ValueError(
            f"prompt must be (batch, {decoder.outputs}, P <= {cond.shape[-1]}) classes, got {tuple(prompt.shape)}"
        )
    return prompt.shape[-1]


def draw_uniform(generator: torch.Generator | None, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """The uniform numbers of a sampling run, drawn in one call on the generator's device, then moved."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def sample_classes(
    logits: torch.Tensor, uniform: torch.Tensor, mode: str, temperature: float
) -> torch.Tensor:
    """logits (B, 256, M), uniform (B, M) in [0, 1) -> classes (B, M) int64.

    ``sample``: the number of classes whose cumulative probability is below ``uniform`` (inverse CDF).
    """
    if mode == "argmax":
        return logits.argmax(dim=1)
    cdf = torch.softmax(logits / temperature, dim=1).cumsum(dim=1)  # (B, 256, M)
    return (cdf < uniform[:, None]).sum(dim=1).clamp_(max=MU_LAW_CLASSES - 1)


@torch.no_grad()
def naive_generate(
    decoder: CausalWaveNetDecoder,
    cond: torch.Tensor,
    mode: str = "argmax",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    prompt: torch.Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Reference generation: cond (B, cond_channels, T) -> classes (B, outputs, T - P), one full decoder pass
    over the last ``receptive_field`` inputs per sample."""
    start = _check(decoder, cond, prompt, mode, temperature)
    batch, time = cond.shape[0], cond.shape[-1]
    dtype = next(decoder.parameters()).dtype
    classes = torch.full((batch, decoder.outputs, time), SILENCE_CLASS, dtype=torch.long, device=cond.device)
    if prompt is not None:
        classes[..., :start] = prompt
    uniform = draw_uniform(generator, (batch, decoder.outputs, time - start), cond.device, dtype)
    field = decoder.receptive_field
    for t in range(start, time):
        lo = max(0, t + 1 - field)
        inputs = shifted_inputs(classes[..., : t + 1])[..., lo:].to(dtype)  # (B, M, window)
        logits = decoder(inputs, cond[..., lo : t + 1])[..., -1]  # (B, 256, M)
        classes[..., t] = sample_classes(logits, uniform[..., t - start], mode, temperature)
        if progress is not None:
            progress(1)
    return classes[..., start:]


class IncrementalDecoder:
    """Cached per-layer state of one generation run, and the one-sample step.

    State: a queue ``(B, C_in, span)`` per causal conv (ring buffer; input of time ``t`` at slot
    ``t % span``), the time counter ``t`` (a 0-dim device tensor, so the step is a fixed sequence of tensor
    operations that a CUDA graph can replay), the next input ``x (B, M)``, the output buffer
    ``classes (B, M, T - P)``. Weights are packed once: each conv as an ``(out, in * kernel)`` matrix,
    all layers' conditioning 1x1s as one matrix, all skip 1x1s as one matrix.
    """

    def __init__(
        self,
        decoder: CausalWaveNetDecoder,
        cond: torch.Tensor,
        uniform: torch.Tensor,
        mode: str,
        temperature: float,
        prompt: torch.Tensor | None,
    ) -> None:
        self.mode, self.temperature = mode, temperature
        param = next(decoder.parameters())
        dtype, device = param.dtype, param.device
        batch, time = cond.shape[0], cond.shape[-1]
        start = 0 if prompt is None else prompt.shape[-1]
        self.start, self.steps = start, time - start
        self.cond = cond.to(dtype).contiguous()  # (B, Cc, T)
        self.uniform = uniform.to(dtype).contiguous()  # (B, M, T - P)
        self.classes = torch.zeros(
            batch, decoder.outputs, max(self.steps, 1), dtype=torch.long, device=device
        )
        self.t = torch.tensor(start, dtype=torch.long, device=device)
        convs = decoder.convs()
        self.weights = [c.weight.detach().flatten(1) for c in convs]  # (out, in * k)
        self.biases = [c.bias.detach() for c in convs]
        self.taps = [
            torch.arange(c.kernel_size[0], device=device) * c.dilation[0] - (c.span - 1) for c in convs
        ]  # offsets of the kernel taps from t, oldest first
        self.spans = [c.span for c in convs]
        layers = decoder.layers
        self.channels = layers[0].channels
        self.cond_weight = torch.cat(
            [layer.cond.weight.detach()[:, :, 0] for layer in layers]
        )  # (L * 2C, Cc)
        self.residuals = [
            None
            if layer.residual is None
            else (layer.residual.weight.detach()[:, :, 0], layer.residual.bias.detach())
            for layer in layers
        ]
        self.skip_weight = torch.cat([layer.skip.weight.detach()[:, :, 0] for layer in layers], dim=1)
        self.skip_bias = torch.stack([layer.skip.bias.detach() for layer in layers]).sum(0)
        self.end = (decoder.end.weight.detach()[:, :, 0], decoder.end.bias.detach())
        self.out = (decoder.out.weight.detach()[:, :, 0], decoder.out.bias.detach())
        # stored transposed, (in, out), for addmm(bias, input, weight)
        self.weights = [w.t().contiguous() for w in self.weights]
        self.cond_weight = self.cond_weight.t().contiguous()
        self.residuals = [None if r is None else (r[0].t().contiguous(), r[1]) for r in self.residuals]
        self.skip_weight = self.skip_weight.t().contiguous()
        self.end = (self.end[0].t().contiguous(), self.end[1])
        self.out = (self.out[0].t().contiguous(), self.out[1])
        self.queues = [
            torch.zeros(batch, c.in_channels, c.span, dtype=dtype, device=device) for c in convs
        ]  # zeros = the causal zero padding before time 0
        self.x = torch.full((batch, decoder.outputs), float(class_inputs(torch.tensor(SILENCE_CLASS))), dtype=dtype,
                            device=device)  # fmt: skip
        if prompt is not None and start > 0:
            self._fill(decoder, prompt.to(device))

    def _fill(self, decoder: CausalWaveNetDecoder, prompt: torch.Tensor) -> None:
        """Run the prompt through the full decoder once and keep the last ``span`` inputs of every conv."""
        start = prompt.shape[-1]
        record: list[torch.Tensor] = []
        with torch.no_grad():
            decoder(shifted_inputs(prompt).to(self.cond.dtype), self.cond[..., :start], record=record)
        for queue, inputs, span in zip(self.queues, record, self.spans, strict=True):
            times = torch.arange(max(0, start - span), start, device=queue.device)
            queue.index_copy_(2, times % span, inputs[..., times])
        self.x.copy_(class_inputs(prompt[..., -1]))

    def step(self) -> None:
        """Generate the sample at time ``t``: update the queues, write ``classes[..., t - P]``, advance ``t``."""
        t, c = self.t, self.channels
        cond_t = self.cond.index_select(2, t.view(1))[..., 0]  # (B, Cc)
        conds = (cond_t @ self.cond_weight).view(cond_t.shape[0], len(self.residuals), 2 * c)  # (B, L, 2C)
        x = self.x  # (B, M)
        hidden = []
        for index, (queue, weight, bias, taps, span) in enumerate(
            zip(self.queues, self.weights, self.biases, self.taps, self.spans, strict=True)
        ):
            queue.index_copy_(2, (t % span).view(1), x[..., None])
            window = queue.index_select(2, (t + taps) % span).flatten(1)  # (B, C_in * k)
            a = torch.addmm(bias, window, weight)  # (B, out)
            if index == 0:  # the input conv
                x = a
                continue
            a = a + conds[:, index - 1]
            h = torch.tanh(a[:, :c]) * torch.sigmoid(a[:, c:])  # (B, C)
            hidden.append(h)
            residual = self.residuals[index - 1]
            if residual is not None:
                x = torch.addmm(x, h, residual[0]).add_(residual[1])
        skip = torch.addmm(self.skip_bias, torch.cat(hidden, dim=1), self.skip_weight)  # (B, skip)
        end = torch.relu(torch.addmm(self.end[1], torch.relu(skip), self.end[0]))
        logits = torch.addmm(self.out[1], end, self.out[0]).view(end.shape[0], MU_LAW_CLASSES, -1)
        position = (t - self.start).view(1)
        uniform = self.uniform.index_select(2, position)[..., 0]  # (B, M)
        classes = sample_classes(logits, uniform, self.mode, self.temperature)  # (B, M)
        self.classes.index_copy_(2, position, classes[..., None])
        self.x.copy_(class_inputs(classes))
        self.t += 1

    def state(self) -> list[torch.Tensor]:
        """Every tensor the step mutates (for saving/restoring around CUDA graph warm-up)."""
        return [*self.queues, self.t, self.x, self.classes]


def _capture(inc: IncrementalDecoder) -> torch.cuda.CUDAGraph:
    """Capture ``inc.step`` in a CUDA graph; the state is restored after the warm-up runs."""
    saved = [s.clone() for s in inc.state()]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up (allocator, cuBLAS handles) outside the graph
            inc.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        inc.step()  # recorded, not run
    for s, old in zip(inc.state(), saved, strict=True):
        s.copy_(old)
    return graph


@torch.no_grad()
def cached_generate(
    decoder: CausalWaveNetDecoder,
    cond: torch.Tensor,
    mode: str = "argmax",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    prompt: torch.Tensor | None = None,
    cuda_graph: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Incremental generation: cond (B, cond_channels, T) -> classes (B, outputs, T - P).

    ``cuda_graph``: replay one captured step per sample (default: when the decoder is on CUDA).
    """
    start = _check(decoder, cond, prompt, mode, temperature)
    param = next(decoder.parameters())
    steps = cond.shape[-1] - start
    uniform = draw_uniform(generator, (cond.shape[0], decoder.outputs, steps), param.device, param.dtype)
    inc = IncrementalDecoder(decoder, cond.to(param.device), uniform, mode, temperature, prompt)
    if steps == 0:
        return inc.classes[..., :0]
    use_graph = param.device.type == "cuda" if cuda_graph is None else cuda_graph
    if use_graph:
        if param.device.type != "cuda":
            raise ValueError("cuda_graph=True needs the decoder on a CUDA device")
        graph = _capture(inc)
        for _ in range(steps):
            graph.replay()
            if progress is not None:
                progress(1)
    else:
        for _ in range(steps):
            inc.step()
            if progress is not None:
                progress(1)
    return inc.classes


def segmented_generate(
    run: Callable[..., torch.Tensor],
    decoder: CausalWaveNetDecoder,
    cond: torch.Tensor,
    segment: int | None,
    mode: str = "argmax",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``run`` (cached_generate / naive_generate) over ``ceil(T / segment)`` segments of ``cond (B, Cc, T)`` side
    by side in one batch, each from silent history: ``segment`` sequential steps instead of ``T``.
    -> classes (B, outputs, T). ``segment`` None (or >= T): one sequence, exactly ``run``."""
    batch, channels, time = cond.shape
    if segment is None or time <= segment:
        return run(decoder, cond, mode, temperature, generator, progress=progress)
    k = -(-time // segment)
    parts = F.pad(cond, (0, k * segment - time)).view(batch, channels, k, segment)
    parts = parts.permute(0, 2, 1, 3).reshape(batch * k, channels, segment)  # (B * k, Cc, segment)
    classes = run(decoder, parts, mode, temperature, generator, progress=progress)  # (B * k, M, segment)
    classes = classes.view(batch, k, -1, segment).permute(0, 2, 1, 3)  # (B, M, k, segment)
    return classes.reshape(batch, -1, k * segment)[..., :time]
