"""UMT-specific behaviour: domain confusion (sign and scale of the gradients), the domain classifier, teacher
forcing, and cached vs naive autoregressive generation (CPU; CUDA graph when CUDA is present)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sepray.dsp import MU_LAW_CLASSES, mu_law_encode
from sepray.losses import separation_loss
from sepray.models import build_model
from sepray.models.confusion import DomainClassifier, reverse_gradient
from sepray.models.generation import cached_generate, naive_generate
from sepray.models.umt_decoder import CausalWaveNetDecoder, shifted_inputs
from tests.conftest import requires_cuda
from tests.models.test_models import TINY_UMT

TINY = dict(TINY_UMT, encoder_channels=6)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads only add contention (10x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_umt(seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_model("umt", dict(TINY, **changes))


def mix_for(model, out_len: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, model.audio_channels, model.input_length(out_len), generator=gen) - 0.5


def small_decoder(seed: int = 0) -> CausalWaveNetDecoder:
    torch.manual_seed(seed)
    decoder = CausalWaveNetDecoder(2, 3, 8, 6, 5, blocks=2, layers_per_block=3, input_kernel=2).double()
    with torch.no_grad():  # sharper distributions than the default init, so argmax/sampling vary a lot
        for p in decoder.parameters():
            p.mul_(3.0)
    return decoder


# ---- gradient reversal and confusion loss ------------------------------------------------------------------


def test_reverse_gradient_is_identity_forward_and_scaled_negation_backward():
    x = torch.randn(3, 4, requires_grad=True)
    g = torch.randn(3, 4)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * g).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * g)


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


@pytest.mark.parametrize("mode", ["reversal", "adversarial"])
def test_confusion_gradients_have_the_right_sign_and_scale(mode):
    weight = 0.25
    model = tiny_umt(confusion_mode=mode, confusion_weight=weight)
    encoder, classifier = list(model.encoder.parameters()), model.classifier_parameters()
    assert {id(p) for p in model.separator_parameters()}.isdisjoint(id(p) for p in classifier)
    latent = model.encode(mix_for(model, 24))
    domains = torch.tensor([0, 1])
    plain = F.cross_entropy(model.domain_logits(latent), domains)
    enc_plain, cls_plain = _grads(plain, encoder), _grads(plain, classifier)
    assert all(g.abs().sum() > 0 for g in enc_plain + cls_plain)

    loss = model.confusion_loss(latent, domains)
    torch.testing.assert_close(loss.model.abs(), weight * plain)
    assert 0.0 <= loss.accuracy <= 1.0 and not loss.accuracy.requires_grad
    for got, ref in zip(_grads(loss.model, encoder), enc_plain, strict=True):
        torch.testing.assert_close(got, -weight * ref)  # the encoder learns to fool the classifier
    if mode == "reversal":
        assert loss.classifier is None
        for got, ref in zip(_grads(loss.model, classifier), cls_plain, strict=True):
            torch.testing.assert_close(got, weight * ref)  # the classifier still learns to classify
    else:
        torch.testing.assert_close(loss.classifier, weight * plain)
        assert all(g.abs().sum() == 0 for g in _grads(loss.model, classifier))  # frozen classifier
        assert all(g.abs().sum() == 0 for g in _grads(loss.classifier, encoder))  # detached latent
        for got, ref in zip(_grads(loss.classifier, classifier), cls_plain, strict=True):
            torch.testing.assert_close(got, weight * ref)


def test_zero_confusion_weight_is_off():
    model = tiny_umt(confusion_weight=0.0)
    latent = model.encode(mix_for(model, 24))
    loss = model.confusion_loss(latent, torch.tensor([1, 0]))
    assert loss.model.item() == 0.0 and not loss.model.requires_grad and loss.classifier is None
    with pytest.raises(ValueError, match="domains"):
        model.confusion_loss(latent, torch.tensor([[1, 0]]))


def test_domain_classifier_learns_a_separable_toy_set():
    gen = torch.Generator().manual_seed(0)
    domains, channels, frames = 3, 8, 5
    means = torch.randn(domains, channels, 1, generator=gen) * 1.5

    def batch(n):
        labels = torch.randint(0, domains, (n,), generator=gen)
        return means[labels] + torch.randn(n, channels, frames, generator=gen), labels

    torch.manual_seed(0)
    classifier = DomainClassifier(channels, domains, channels=16, layers=3)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    for _ in range(300):
        latent, labels = batch(32)
        loss = F.cross_entropy(classifier(latent), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    latent, labels = batch(500)
    with torch.no_grad():
        accuracy = (classifier(latent).argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.9, accuracy


# ---- teacher forcing ---------------------------------------------------------------------------------------


def test_teacher_forcing_shapes_loss_and_causality():
    model = tiny_umt(decoder="autoregressive").double()
    mix = mix_for(model, 20).double()
    n = model.output_length(mix.shape[-1])
    target = torch.rand(2, 2, 1, n, dtype=torch.float64) - 0.5
    logits = model.forward_teacher(mix, target)
    assert logits.shape == (2, MU_LAW_CLASSES, 2, 1, n)
    loss = separation_loss("mulaw", logits, target)
    loss.backward()
    dead = [
        name for name, p in model.named_parameters() if p.grad is None and not name.startswith("classifier.")
    ]
    assert not dead, dead
    t = n // 2
    changed = target.clone()
    changed[..., t] = -changed[..., t]  # a different mu-law class at sample t
    assert not torch.equal(mu_law_encode(changed), mu_law_encode(target))
    with torch.no_grad():
        diff = (
            (model.forward_teacher(mix, changed) - model.forward_teacher(mix, target))
            .abs()
            .amax((0, 1, 2, 3))
        )
    assert diff[: t + 1].max() == 0 and diff[t + 1] > 0  # logit t sees the target before t only
    with pytest.raises(ValueError, match="target must have shape"):
        model.forward_teacher(mix, target[..., :-1])
    with pytest.raises(ValueError, match="autoregressive"):
        tiny_umt().forward_teacher(mix.float(), target.float())
    with pytest.raises(ValueError, match="autoregressive"):
        tiny_umt().generate(mix.float())


def test_autoregressive_state_dict_round_trip(tmp_path):
    model = tiny_umt(seed=3, decoder="autoregressive")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = tiny_umt(seed=4, decoder="autoregressive")
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    mix = mix_for(model, 12)
    target = torch.rand(2, 2, 1, model.output_length(mix.shape[-1])) - 0.5
    with torch.no_grad():
        assert torch.equal(model.forward_teacher(mix, target), fresh.forward_teacher(mix, target))


# ---- generation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_length", [0, 30])
def test_cached_and_naive_generation_give_identical_samples(prompt_length):
    decoder = small_decoder()
    time = 70
    cond = torch.randn(3, 3, time, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    prompt = None
    if prompt_length:
        prompt = torch.randint(
            0, MU_LAW_CLASSES, (3, 2, prompt_length), generator=torch.Generator().manual_seed(3)
        )
    naive = naive_generate(decoder, cond, prompt=prompt)
    cached = cached_generate(decoder, cond, prompt=prompt)
    assert naive.shape == (3, 2, time - prompt_length) and naive.dtype == torch.long
    assert torch.equal(naive, cached)
    assert len(naive.unique()) > 5  # not a constant sequence
    for temperature in (1.0, 0.7):
        draws = [torch.Generator().manual_seed(7) for _ in range(2)]
        naive = naive_generate(decoder, cond, "sample", temperature, draws[0], prompt)
        cached = cached_generate(decoder, cond, "sample", temperature, draws[1], prompt)
        assert torch.equal(naive, cached)
    other = cached_generate(decoder, cond, "sample", 1.0, torch.Generator().manual_seed(8), prompt)
    assert not torch.equal(other, cached)  # the draws matter
    # the generated classes are the argmax of the teacher-forced logits of the generated sequence
    full = cached_generate(decoder, cond)
    assert torch.equal(decoder(shifted_inputs(full).double(), cond).argmax(1), full)


def test_generation_arguments_are_checked():
    decoder = small_decoder()
    cond = torch.randn(1, 3, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="mode"):
        cached_generate(decoder, cond, mode="beam")
    with pytest.raises(ValueError, match="temperature"):
        naive_generate(decoder, cond, mode="sample", temperature=0.0)
    with pytest.raises(ValueError, match="prompt"):
        cached_generate(decoder, cond, prompt=torch.zeros(1, 1, 3, dtype=torch.long))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            cached_generate(decoder, cond, cuda_graph=True)


def test_umt_generate_matches_naive_and_forward():
    model = tiny_umt(decoder="autoregressive", decode_mode="argmax").double().eval()
    mix = mix_for(model, 16).double()
    cached = model.generate(mix)
    assert cached.shape == (2, 2, 1, model.output_length(mix.shape[-1]))
    assert torch.equal(cached, model.generate(mix, method="naive"))
    with torch.no_grad():
        assert torch.equal(model.decode(model(mix)), cached)  # forward(mix) = argmax generation
    draws = [torch.Generator().manual_seed(1) for _ in range(2)]
    sampled = model.generate(mix, "sample", 0.9, draws[0])
    assert torch.equal(sampled, model.generate(mix, "sample", 0.9, draws[1], method="naive"))


@pytest.mark.gpu
@requires_cuda
def test_cuda_graph_generation_matches_eager_and_naive():
    decoder = small_decoder().cuda()
    cond = torch.randn(4, 3, 60, dtype=torch.float64, device="cuda")
    prompt = torch.randint(0, MU_LAW_CLASSES, (4, 2, 9), device="cuda")
    for mode in ("argmax", "sample"):
        draws = [torch.Generator(device="cuda").manual_seed(5) for _ in range(3)]
        graphed = cached_generate(decoder, cond, mode, 0.8, draws[0], prompt, cuda_graph=True)
        eager = cached_generate(decoder, cond, mode, 0.8, draws[1], prompt, cuda_graph=False)
        naive = naive_generate(decoder, cond, mode, 0.8, draws[2], prompt)
        assert graphed.device.type == "cuda" and graphed.shape == (4, 2, 51)
        assert torch.equal(graphed, eager) and torch.equal(graphed, naive)
