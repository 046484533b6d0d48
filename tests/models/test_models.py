"""Separator models: shapes, gradients, save/load, input checks, and geometry checks that can fail.

Every model runs in a tiny configuration on short inputs so the whole file takes seconds on CPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sepray.dsp import MU_LAW_CLASSES, center_crop, mu_law_class_values
from sepray.models import REGISTRY, build_model, make_config
from sepray.models.layers import DilatedResidualLayer, DilatedResidualStack, Upsample2x, decimate
from sepray.models.stft_mask import STFTMaskConfig
from sepray.models.structure_a import StructureAConfig
from sepray.models.umt import UMTConfig
from sepray.models.wavenet import WaveNetConfig
from sepray.models.waveunet import WaveUNetConfig

TINY_WAVENET = dict(
    blocks=2,
    layers_per_block=3,
    residual_channels=4,
    skip_channels=6,
    end_channels=5,
    input_kernel=5,
    stft_n_fft=8,
)
TINY_WAVEUNET = dict(levels=3, channels=4, down_kernel=5, up_kernel=3)
TINY_STFT = dict(n_fft=32, hop=8, freq_filters=6, time_filters=5, time_kernel=3, bottleneck=7)
TINY_SPEC_UNET = dict(n_fft=32, hop=8, levels=2, channels=3, max_channels=5)
TINY_STRUCTURE_A = dict(
    encoder_blocks=1,
    encoder_layers_per_block=3,
    decoder_blocks=1,
    decoder_layers_per_block=2,
    residual_channels=4,
    latent_channels=3,
    skip_channels=5,
    end_channels=6,
)
TINY_UMT = dict(
    encoder_blocks=1,
    encoder_layers_per_block=3,
    encoder_channels=4,
    latent_channels=3,
    pool=4,
    classifier_channels=5,
    classifier_layers=2,
    decoder_blocks=1,
    decoder_layers_per_block=3,
    residual_channels=4,
    skip_channels=6,
    end_channels=5,
)

CASES = {
    "wavenet-mulaw": ("wavenet", dict(TINY_WAVENET)),
    "wavenet-mulaw-argmax": ("wavenet", dict(TINY_WAVENET, decode_mode="argmax")),
    "wavenet-raw-regression": ("wavenet", dict(TINY_WAVENET, input="raw", head="regression")),
    "wavenet-stft-regression-stereo": (
        "wavenet",
        dict(TINY_WAVENET, input="stft", head="regression", audio_channels=2),
    ),
    "wavenet-stft-mulaw-base3": ("wavenet", dict(TINY_WAVENET, input="stft", dilation_base=3, kernel_size=5)),
    "wavenet-mulaw-stereo-one-source": (
        "wavenet",
        dict(TINY_WAVENET, audio_channels=2, sources=("accompaniment",)),
    ),
    "waveunet": ("waveunet", dict(TINY_WAVEUNET)),
    "waveunet-learned-difference-stereo": (
        "waveunet",
        dict(TINY_WAVEUNET, upsampling="learned", output="difference", audio_channels=2),
    ),
    "waveunet-double": ("waveunet", dict(TINY_WAVEUNET, growth="double", levels=2)),
    "waveunet-same": ("waveunet", dict(TINY_WAVEUNET, context=False)),
    "waveunet-same-learned-difference": (
        "waveunet",
        dict(TINY_WAVEUNET, context=False, upsampling="learned", output="difference", audio_channels=2),
    ),
    "stft_mask": ("stft_mask", dict(TINY_STFT)),
    "stft_mask-stereo-odd-reach": ("stft_mask", dict(TINY_STFT, n_fft=30, hop=7, audio_channels=2)),
    "spec_unet": ("spec_unet", dict(TINY_SPEC_UNET)),
    "spec_unet-stereo-wiener-odd-bins": (
        "spec_unet",
        dict(TINY_SPEC_UNET, n_fft=30, hop=7, levels=3, audio_channels=2, wiener_iterations=2),
    ),
    "spec_unet-one-source": ("spec_unet", dict(TINY_SPEC_UNET, sources=("vocals",))),
    "structure_a": ("structure_a", dict(TINY_STRUCTURE_A)),
    "structure_a-raw-regression-gated-stereo-no-latent": (
        "structure_a",
        dict(
            TINY_STRUCTURE_A,
            input="raw",
            head="regression",
            activation="gated",
            latent_channels=0,
            audio_channels=2,
        ),
    ),
    "umt-separator-pool4": ("umt", dict(TINY_UMT)),
    "umt-separator-argmax-pool3-base3": (
        "umt",
        dict(TINY_UMT, pool=3, decode_mode="argmax", dilation_base=3),
    ),
    "umt-separator-raw-regression-stereo-pool1": (
        "umt",
        dict(
            TINY_UMT,
            pool=1,
            input="raw",
            head="regression",
            audio_channels=2,
            sources=("vocals",),
            encoder_channels=8,
        ),
    ),
}
VALID_CASES = [k for k, (name, cfg) in CASES.items() if name == "wavenet" or cfg.get("context", True) is True]
VALID_CASES = [k for k in VALID_CASES if CASES[k][0] not in ("stft_mask", "spec_unet")]
SAME_CASES = [k for k in CASES if k not in VALID_CASES]


def make(case: str, seed: int = 0):
    torch.manual_seed(seed)
    name, cfg = CASES[case]
    return build_model(name, cfg)


def random_mix(model, length: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, model.audio_channels, length, generator=gen) - 0.5


def expected_shape(model, batch: int, time_out: int) -> tuple[int, ...]:
    shape = (batch, len(model.sources), model.audio_channels, time_out)
    return (batch, MU_LAW_CLASSES, *shape[1:]) if model.head == "mulaw" else shape


# ---- shapes, heads, gradients, save/load ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_output_and_decode_shapes(case):
    model = make(case)
    for wanted in (1, 13, 70):
        n_in = model.input_length(wanted)
        n_out = model.output_length(n_in)
        assert n_out >= wanted
        with torch.no_grad():
            out = model(random_mix(model, n_in))
            wave = model.decode(out)
        assert out.shape == expected_shape(model, 2, n_out)
        assert wave.shape == (2, len(model.sources), model.audio_channels, n_out)
        assert wave.abs().max() <= 1.0


@pytest.mark.parametrize("case", CASES)
def test_gradients_reach_every_parameter(case):
    model = make(case)
    out = model(random_mix(model, model.input_length(40)))
    # random weights: a plain sum is constant for outputs that add up to the mix (difference output, masks)
    loss = (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum()
    if hasattr(
        model, "domain_logits"
    ):  # UMT: the domain classifier is trained by its own loss, not by forward
        loss = loss + model.domain_logits(model.encode(random_mix(model, model.input_length(40)))).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    dead = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not dead, f"zero gradient for {dead}"


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip(case, tmp_path):
    model = make(case, seed=3)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    fresh = make(case, seed=4)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = random_mix(model, model.input_length(30))
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    assert build_model(CASES[case][0], model.config).config == model.config


def test_models_take_only_their_config_and_store_it():
    for name, (config_cls, model_cls) in REGISTRY.items():
        config = config_cls()
        assert dataclasses.is_dataclass(config) and config.sources == ("vocals", "accompaniment")
        assert config.audio_channels == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.audio_channels = 2
        if name != "wavenet":  # the default WaveNet is large; building it is checked below
            assert model_cls(config).config is config


# ---- input checks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_wrong_input_shape_is_a_value_error(case):
    model = make(case)
    n_in = model.input_length(20)
    with pytest.raises(ValueError, match=r"\(2, " + str(n_in) + r"\)"):
        model(torch.zeros(2, n_in))  # 2-D
    with pytest.raises(ValueError, match="got shape"):
        model(torch.zeros(1, model.audio_channels + 1, n_in))
    with pytest.raises(ValueError):
        model(torch.zeros(1, model.audio_channels, 1))  # too short for every model


@pytest.mark.parametrize("case", ["waveunet", "waveunet-same", "stft_mask", "spec_unet"])
def test_invalid_lengths_are_value_errors(case):
    model = make(case)
    n_in = model.input_length(50)
    with pytest.raises(ValueError, match="input shape"):
        model(torch.zeros(1, model.audio_channels, n_in + 1))
    with pytest.raises(ValueError):
        model.output_length(n_in - 1)


# ---- geometry ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_input_length_is_the_smallest_valid_input(case):
    model = make(case)
    for wanted in [1, 2, 3, 5, 8, 9, 31, 64, 100, 257]:
        n_in = model.input_length(wanted)
        n_out = model.output_length(n_in)
        assert n_out >= wanted
        assert model.input_length(n_out) == n_in
        for shorter in range(max(1, n_in - 2 * model.step), n_in):
            try:
                assert model.output_length(shorter) < wanted
            except ValueError:
                pass
        if model.halo:
            assert n_out == n_in and n_in % model.step == 0
        else:
            assert n_in - n_out == model.receptive_field - 1


@pytest.mark.parametrize("case", VALID_CASES)
def test_impulse_changes_only_the_receptive_field(case):
    """Valid models: output j depends only on the inputs of the shortest valid piece that starts at the last
    multiple of ``step`` not after j and still produces output j. With step 1 (WaveNet) that is
    j .. j + receptive_field - 1: the field centred on input j + context_left."""
    model = make(case).double()
    rf, step = model.receptive_field, model.step
    n_in = model.input_length(3 * rf)
    x = random_mix(model, n_in, batch=1).double()
    first = torch.tensor([j - j % step for j in range(model.output_length(n_in))])
    last = torch.tensor([f + model.input_length(j - f + 1) - 1 for j, f in enumerate(first.tolist())])
    with torch.no_grad():
        base = model(x)
        for p in (rf + 3, n_in // 2, n_in - rf - 2):
            y = x.clone()
            y[..., p] += 0.25
            diff = (model(y) - base).abs()
            changed = diff.flatten(0, -2).amax(0) > 1e-12  # (T_out,)
            allowed = (first <= p) & (p <= last)
            assert changed.any()
            assert not (changed & ~allowed).any(), (p, torch.nonzero(changed & ~allowed).flatten())
            tight = CASES[case][0] == "wavenet" and CASES[case][1].get("input") != "stft"  # Hann w[0] == 0
            if tight:  # every tap has a weight: exactly the field changes
                assert changed.equal(allowed)


def test_valid_waveunet_decimates_odd_lengths_only():
    """Crop-and-concat lines up only if every decimated sequence keeps both of its end samples."""
    model = make("waveunet")
    lengths = []
    for conv in model.down:
        conv.register_forward_hook(lambda module, args, out: lengths.append(out.shape[-1]))
    for wanted in (1, 6, 50):
        lengths.clear()
        with torch.no_grad():
            model(torch.zeros(1, 1, model.input_length(wanted)))
        assert len(lengths) == 3 and all(n % 2 == 1 for n in lengths), lengths


@pytest.mark.parametrize("case", SAME_CASES)
def test_impulse_stays_within_the_halo(case):
    model = make(case).double().eval()  # batch norm: running statistics, frames independent
    n_in = model.input_length(4 * model.halo + 3 * model.step)
    x = random_mix(model, n_in, batch=1).double()
    with torch.no_grad():
        base = model(x)
        p = n_in // 2 + 1
        y = x.clone()
        y[..., p] += 0.25
        diff = (model(y) - base).abs().flatten(0, -2).amax(0)
    changed = torch.nonzero(diff > 1e-12).flatten()
    assert len(changed) > 0
    assert changed.min() >= p - model.halo and changed.max() <= p + model.halo


def _pieces(model, n_out_piece: int):
    """Input length of one piece and an offset (a multiple of step) for the second piece."""
    n_in = model.input_length(n_out_piece)
    offset = model.step * max(1, (n_in // 2) // model.step)
    return n_in, offset


@pytest.mark.parametrize("case", VALID_CASES)
def test_valid_model_pieces_match_the_whole(case):
    model = make(case).eval()
    piece_in, offset = _pieces(model, 40)
    long_in = model.input_length(model.output_length(piece_in) + offset + 3 * model.step)
    x = random_mix(model, long_in)
    with torch.no_grad():
        whole = model(x)
        for start in (0, offset, long_in - piece_in - (long_in - piece_in) % model.step):
            part = model(x[..., start : start + piece_in])
            n = part.shape[-1]
            torch.testing.assert_close(part, whole[..., start : start + n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", SAME_CASES)
def test_same_model_pieces_match_the_whole_away_from_cuts(case):
    model = make(case).eval()
    halo, step = model.halo, model.step
    piece = model.input_length(2 * halo + 4 * step)
    offset = step * max(1, (piece // 3) // step)
    long_len = model.input_length(piece + 2 * offset)
    x = random_mix(model, long_len)
    with torch.no_grad():
        whole = model(x)
        for start in (0, offset, 2 * offset):
            part = model(x[..., start : start + piece])
            torch.testing.assert_close(
                part[..., halo : piece - halo],
                whole[..., start + halo : start + piece - halo],
                atol=1e-5,
                rtol=1e-5,
            )


def test_reference_geometry_of_the_defaults():
    wavenet = build_model("wavenet", {})
    assert wavenet.receptive_field == 5135  # 5 x (1 .. 256), kernel 3, input kernel 25
    waveunet = build_model("waveunet", {})
    assert waveunet.output_length(147443) == 16389  # the paper's input/output lengths
    assert waveunet.input_length(16389) == 147443
    assert waveunet.step == 4096 and waveunet.halo == 0
    same = build_model("waveunet", {"context": False, "levels": 4})
    assert same.step == 16 and same.halo % 16 == 0 and same.halo >= same.receptive_radius()
    stft = build_model("stft_mask", {})
    assert stft.step == 256 and stft.halo == 1024 + 14 * 256
    structure_a = build_model("structure_a", {})  # input kernel 3, 3 + 3 blocks of dilations 1 .. 512
    assert structure_a.receptive_field == 3 + 6 * 2 * 1023 and structure_a.step == 1
    umt = build_model("umt", {})  # encoder 3 x 10, 800-sample pooling, separator decoder 4 x 10
    assert umt.step == 800 and umt.receptive_field == 3 + 7 * 2 * 1023
    assert (umt.input_length(1) - umt.encoder.context) % 800 == 0


# ---- heads -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["expectation", "argmax"])
def test_mulaw_decode_modes(mode):
    model = build_model("wavenet", dict(TINY_WAVENET, decode_mode=mode))
    values = mu_law_class_values()
    logits = torch.randn(2, MU_LAW_CLASSES, 2, 1, 9) * 5
    wave = model.decode(logits)
    assert wave.shape == (2, 2, 1, 9) and wave.abs().max() <= 1.0
    confident = torch.full((1, MU_LAW_CLASSES, 2, 1, 3), -1e4)
    confident[0, 17, :, :, 0] = confident[0, 128, :, :, 1] = confident[0, 255, :, :, 2] = 1e4
    expected = values[[17, 128, 255]].expand(1, 2, 1, 3)
    torch.testing.assert_close(model.decode(confident), expected)
    if mode == "argmax":
        assert set(model.decode(logits).unique().tolist()) <= set(values.tolist())


def test_mulaw_logits_fit_cross_entropy():
    model = make("wavenet-mulaw")
    n_in = model.input_length(16)
    logits = model(random_mix(model, n_in))
    target = torch.randint(0, MU_LAW_CLASSES, (2, 2, 1, 16))
    loss = F.cross_entropy(logits, target)
    assert torch.isfinite(loss)


def test_regression_heads_are_bounded_and_difference_output_sums_to_the_mix():
    model = make("waveunet-learned-difference-stereo")
    n_in = model.input_length(30)
    x = random_mix(model, n_in)
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y.sum(dim=1), center_crop(x, y.shape[-1]))
    assert y[:, :-1].abs().max() <= 1.0
    stft = make("stft_mask")
    x = random_mix(stft, stft.input_length(96))
    with torch.no_grad():
        y = stft(x)
    # ratio masks sum to one, so the sources add back up to the mixture
    torch.testing.assert_close(y.sum(dim=1), x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "case", ["wavenet-raw-regression", "wavenet-stft-mulaw-base3", "waveunet-same", "stft_mask"]
)
def test_autocast_runs_and_backpropagates(case):
    """Mixed precision (the trainer uses it on CUDA; bfloat16 on CPU exercises the same casting paths)."""
    model = make(case)
    x = random_mix(model, model.input_length(20))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---- config validation -------------------------------------------------------------------------------------

BAD_CONFIGS = [
    (WaveNetConfig, {"input_kernel": 24}),
    (WaveNetConfig, {"kernel_size": 2}),
    (WaveNetConfig, {"head": "softmax"}),
    (WaveNetConfig, {"input": "mel"}),
    (WaveNetConfig, {"decode_mode": "sample"}),
    (WaveNetConfig, {"blocks": 0}),
    (WaveNetConfig, {"residual_channels": 0}),
    (WaveNetConfig, {"stft_n_fft": 1}),
    (WaveNetConfig, {"sources": ()}),
    (WaveUNetConfig, {"levels": 0}),
    (WaveUNetConfig, {"growth": "cubic"}),
    (WaveUNetConfig, {"down_kernel": 14}),
    (WaveUNetConfig, {"up_kernel": 0}),
    (WaveUNetConfig, {"upsampling": "nearest"}),
    (WaveUNetConfig, {"output": "sum"}),
    (WaveUNetConfig, {"output": "difference", "sources": ("vocals",)}),
    (WaveUNetConfig, {"audio_channels": 0}),
    (STFTMaskConfig, {"hop": 513}),
    (STFTMaskConfig, {"hop": 0}),
    (STFTMaskConfig, {"time_kernel": 4}),
    (STFTMaskConfig, {"n_fft": 2}),
    (STFTMaskConfig, {"bottleneck": 0}),
    (STFTMaskConfig, {"mask_eps": 0.0}),
    (STFTMaskConfig, {"sources": ("vocals", "vocals")}),
    (StructureAConfig, {"encoder_blocks": 0}),
    (StructureAConfig, {"kernel_size": 4}),
    (StructureAConfig, {"activation": "tanh"}),
    (StructureAConfig, {"latent_channels": -1}),
    (StructureAConfig, {"head": "softmax"}),
    (UMTConfig, {"pool": 0}),
    (UMTConfig, {"decoder": "parallel"}),
    (UMTConfig, {"decoder": "autoregressive", "head": "regression"}),
    (UMTConfig, {"confusion_mode": "both"}),
    (UMTConfig, {"confusion_weight": -0.1}),
    (UMTConfig, {"num_domains": 1}),
    (UMTConfig, {"temperature": 0.0}),
    (UMTConfig, {"generation_mode": "beam"}),
    (UMTConfig, {"input_kernel": 2}),
]


@pytest.mark.parametrize(("config_cls", "values"), BAD_CONFIGS)
def test_bad_config_values_raise(config_cls, values):
    with pytest.raises(ValueError):
        config_cls(**values)


def test_make_config_rejects_unknown_keys_and_builds_tuples():
    with pytest.raises(ValueError, match="unknown key"):
        make_config("wavenet", {"residual_chanels": 8})
    with pytest.raises(ValueError):
        make_config("waveunet", {"levels": "many"})
    config = make_config("stft_mask", {"sources": ["accompaniment"]})
    assert config.sources == ("accompaniment",)


# ---- shared layers -----------------------------------------------------------------------------------------


def _reference_layer(layer, x, cond, skip_length):
    """Plain autograd version of DilatedResidualLayer.forward (the spec the fused function must match)."""
    a = layer.conv(x if layer.activation == "gated" else F.relu(x))
    if layer.cond is not None:
        a = a + layer.cond(center_crop(cond, a.shape[-1]))
    c = layer.channels
    h = torch.tanh(a[:, :c]) * torch.sigmoid(a[:, c:]) if layer.activation == "gated" else F.relu(a)
    residual = center_crop(x, h.shape[-1]) + layer.residual(h) if layer.residual is not None else None
    return residual, layer.skip(center_crop(h, skip_length))


@pytest.mark.parametrize("activation", ["gated", "relu"])
@pytest.mark.parametrize("cond_channels", [0, 3])
@pytest.mark.parametrize("residual", [True, False])
def test_fused_layer_matches_plain_autograd(activation, cond_channels, residual):
    torch.manual_seed(0)
    layer = DilatedResidualLayer(4, 3, 2, 5, activation, cond_channels, residual).double()
    x = torch.randn(2, 4, 21, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(2, 3, 19, dtype=torch.float64, requires_grad=True) if cond_channels else None
    inputs = [x, *([cond] if cond is not None else []), *layer.parameters()]

    def loss(outputs):
        res, skip = outputs
        return (skip**2).sum() + ((res**3).sum() if res is not None else 0)

    ours, ref = layer(x, cond, 11), _reference_layer(layer, x, cond, 11)
    for a, b in zip(ours, ref, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    for a, b in zip(
        torch.autograd.grad(loss(ours), inputs), torch.autograd.grad(loss(ref), inputs), strict=True
    ):
        torch.testing.assert_close(a, b)
    if activation == "gated":  # (finite differences are unreliable at ReLU kinks)
        torch.autograd.gradcheck(
            lambda t: tuple(o for o in layer(t, cond, 7) if o is not None), (x,), fast_mode=True
        )


def test_stack_context_and_conditioning():
    torch.manual_seed(0)
    stack = DilatedResidualStack(
        4, blocks=2, layers_per_block=3, kernel_size=3, dilation_base=2, cond_channels=2
    )
    assert stack.context == 2 * 2 * (1 + 2 + 4)
    assert stack.skip_channels is None
    x, cond = torch.randn(1, 4, 40), torch.randn(1, 2, 40)
    residual, skip = stack(x, cond)
    assert residual.shape == (1, 4, 40 - stack.context) and skip is None
    other, _ = stack(x, cond + 1.0)
    assert not torch.allclose(residual, other)  # the conditioning input reaches the output
    with pytest.raises(ValueError, match="conditioning"):
        stack(x)
    skips = DilatedResidualStack(4, 1, 2, skip_channels=3, final_residual=False)
    residual, skip = skips(torch.randn(2, 4, 20), skip_length=5)
    assert residual is None and skip.shape == (2, 3, 5)
    # the fused skip GEMM is the sum of the per-layer skip convs
    x = torch.randn(2, 4, 20)
    expected, h = 0, x
    for layer in skips.layers:
        h, s = layer(h, skip_length=5)
        expected = expected + s
    torch.testing.assert_close(skips(x, skip_length=5)[1], expected)


def test_decimate_and_upsample_line_up():
    x = torch.arange(5.0).view(1, 1, 5)
    assert decimate(x).tolist() == [[[0.0, 2.0, 4.0]]]
    up = Upsample2x(1)
    assert up(torch.tensor([[[0.0, 2.0, 4.0]]])).tolist() == [[[0.0, 1.0, 2.0, 3.0, 4.0]]]
    assert up(torch.tensor([[[0.0, 2.0]]]), same=True).tolist() == [[[0.0, 1.0, 2.0, 2.0]]]
    learned = Upsample2x(1, learned=True)
    torch.testing.assert_close(learned(x), Upsample2x(1)(x))  # starts as linear interpolation
    assert decimate(learned(x, same=True)).equal(x)


@pytest.mark.parametrize("case", ["spec_unet", "spec_unet-stereo-wiener-odd-bins"])
def test_spec_unet_estimates_sum_to_the_mixture(case):
    """Softmax masks (and Wiener steps) share the mixture out: the estimates add up to it."""
    model = make(case)
    model.eval()
    mix = random_mix(model, model.input_length(300))
    with torch.no_grad():
        est = model(mix)
    assert torch.allclose(est.sum(dim=1), mix, atol=1e-5)


def test_spec_unet_one_source_mask_is_a_sigmoid_between_zero_and_the_mixture():
    model = make("spec_unet-one-source")
    spec_mag = torch.rand(2, 1, 17, 9) * 3
    masks = model.masks(spec_mag)
    assert masks.shape == (2, 1, 1, 17, 9) and (masks > 0).all() and (masks < 1).all()
