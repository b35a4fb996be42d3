"""The Gaussian head (docs/DESIGN.md §3, §5): dictionary, formulas, scales, batches, encode/render split."""
from __future__ import annotations

import warnings

import pytest
import torch

import gaussian
import models
from gaussian import (GaussianField, LATTICE_FACTOR, make_dgp_dictionary, output_size, parse_scale)
from rasterizer.brute_force import rasterize_brute_force
from conftest import state_dict_layout

TINY_EDSR = {"name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4, "n_resblocks": 1,
                                               "n_feats": 64}}


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.make({"name": "continuous-gaussian", "args": {"encoder_spec": TINY_EDSR}}).eval()


def test_dictionary_is_the_cartesian_product_then_zeros():
    d = make_dgp_dictionary()
    assert d.shape == (730, 3)
    assert d[0].tolist() == pytest.approx([0.0, -0.86, 0.0])
    assert d[1].tolist() == pytest.approx([0.0, -0.86, 0.33])  # l22 varies fastest
    assert d[9].tolist() == pytest.approx([0.0, -0.36, 0.0])
    assert d[81].tolist() == pytest.approx([0.41, -0.86, 0.0])
    assert d[728].tolist() == pytest.approx([2.36, 1.54, 2.23])
    assert d[729].tolist() == [0.0, 0.0, 0.0]


def test_dictionary_is_not_in_the_state_dict(tiny_model):
    assert "gau_dict" not in tiny_model.state_dict()
    assert tiny_model.gau_dict.shape == (730, 3)


@pytest.mark.parametrize("scale,expected", [(4, (4.0, 4.0)), (2.5, (2.5, 2.5)), ((3, 2), (3.0, 2.0)),
                                            (torch.tensor([[3.5, 1.5]]), (3.5, 1.5)),
                                            (torch.tensor([4.0]), (4.0, 4.0)), (torch.tensor(2.0), (2.0, 2.0)),
                                            (torch.tensor([[2.0, 3.0], [2.0, 3.0]]), (2.0, 3.0))])
def test_parse_scale_accepts_the_official_forms(scale, expected):
    assert parse_scale(scale) == expected


@pytest.mark.parametrize("bad", [0, -2, float("nan"), float("inf"), (1, 2, 3), torch.tensor([[2.0], [3.0]])])
def test_parse_scale_rejects_bad_scales(bad):
    with pytest.raises(ValueError):
        parse_scale(bad)


def test_output_size_rounds_like_the_official_code():
    assert output_size((10, 7), scale=(3.5, 2.25)) == (35, 16)
    assert output_size((10, 7), size=(21, 9)) == (21, 9)
    with pytest.raises(ValueError):
        output_size((10, 7), scale=2, size=(1, 1))


def test_encode_shapes_and_ranges(tiny_model):
    with torch.no_grad():
        field = tiny_model.encode(torch.rand(2, 3, 5, 6))
    assert field.lr_size == (5, 6)
    for tensor, channels in ((field.colour, 3), (field.cholesky, 3), (field.offset, 2)):
        assert tensor.shape == (2, 10, 12, channels)
    assert field.offset.abs().max() < 1
    d = make_dgp_dictionary()
    # A convex combination of dictionary rows stays inside their bounding box.
    assert (field.cholesky >= d.min(0).values - 1e-6).all() and (field.cholesky <= d.max(0).values + 1e-6).all()


def test_encode_follows_the_design_formulas(tiny_model):
    """Recompute colour, covariance and offset of one Gaussian from the features by the written formulas."""
    inp = torch.rand(1, 3, 4, 5)
    with torch.no_grad():
        field = tiny_model.encode(inp)
        feat = torch.nn.functional.pixel_unshuffle(tiny_model.encoder(inp), 2)
        r, c = 3, 7
        f = feat[0, :, r, c]
        q = tiny_model.conv1(torch.nn.functional.leaky_relu(feat, 0.01))[0, :, r, c]
        d = make_dgp_dictionary()
        w = torch.softmax(tiny_model.mlp_vector(d) @ q, 0)
        assert torch.allclose(field.colour[0, r, c], tiny_model.mlp(f), atol=1e-5)
        assert torch.allclose(field.cholesky[0, r, c], w @ d, atol=1e-5)
        off = torch.tanh(tiny_model.mlp_offset(torch.nn.functional.leaky_relu(f, 0.01)))
        assert torch.allclose(field.offset[0, r, c], off, atol=1e-5)


@pytest.mark.parametrize("scale", [(4.0, 4.0), (1.5, 1.5), (3.3, 2.2)])
def test_render_follows_the_design_formulas(tiny_model, scale):
    """Centres and covariances in output pixels, checked through a float64 brute-force render."""
    with torch.no_grad():
        field = tiny_model.encode(torch.rand(1, 3, 4, 5))
        out = tiny_model.render(field, scale=scale)
    h, w = 4, 5
    H, W = out.shape[-2:]
    s_h, s_w = H / h, W / w
    r = torch.arange(2 * h).view(-1, 1).double()
    c = torch.arange(2 * w).view(1, -1).double()
    off = field.offset.double()
    x = c / w - 1 + 2 * off[..., 0] / w - 1 / W
    y = r / h - 1 + 2 * off[..., 1] / h - 1 / H
    l0 = field.cholesky.double()
    chol = torch.stack((s_w * l0[..., 0] / 4, s_h * l0[..., 1] / 4, s_h * l0[..., 2] / 4), -1)
    ref = rasterize_brute_force(torch.stack((x, y), -1), chol, field.colour, H, W)
    assert ((out.double() - ref).abs().max() / ref.abs().max()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("window,cells", [(None, None), ((1.3, 0.7, 2.5, 3.1), ((1, 4), (0, 3)))])
def test_output_gaussians_are_the_same_with_and_without_gradients(dtype, window, cells):
    """Inference (the compiled pass on the CPU) and training (torch, differentiable) give the same numbers bit
    for bit, for the whole image and a window's cells."""
    torch.manual_seed(3)
    f, h, w = LATTICE_FACTOR, 4, 5
    field = GaussianField(torch.randn(2, f * h, f * w, 3, dtype=dtype), torch.randn(2, f * h, f * w, 3, dtype=dtype),
                          torch.rand(2, f * h, f * w, 2, dtype=dtype) * 2 - 1)
    with torch.no_grad():
        inferred = gaussian.output_gaussians(field, (13, 17), window, cells)
    trained = GaussianField(field.colour, field.cholesky.requires_grad_(), field.offset.requires_grad_())
    reference = gaussian.output_gaussians(trained, (13, 17), window, cells)
    assert reference[0].requires_grad and reference[1].requires_grad
    for ours, theirs in zip(inferred, reference):
        assert ours.dtype == dtype and torch.equal(ours, theirs.detach())


@pytest.mark.parametrize("scale,size", [(torch.tensor([[4.0, 4.0]]), (20, 24)), (torch.tensor([2.5]), (12, 15)),
                                        (torch.tensor([[1.8, 3.25]]), (9, 20))])
def test_forward_sizes_for_integer_non_integer_and_anisotropic_scales(tiny_model, scale, size):
    with torch.no_grad():
        out = tiny_model(torch.rand(1, 3, 5, 6), scale)
    assert out.shape == (1, 3) + size


def test_encode_once_then_render_equals_forward(tiny_model):
    inp = torch.rand(2, 3, 5, 4)
    with torch.no_grad():
        field = tiny_model.encode(inp)
        for scale in (2.0, 3.7, (4.0, 2.5)):
            expected = tiny_model(inp, torch.tensor([parse_scale(scale)], dtype=torch.float64))
            assert torch.equal(tiny_model.render(field, scale=scale), expected)


def test_batch_samples_are_independent(tiny_model):
    inp = torch.rand(3, 3, 5, 6)
    with torch.no_grad():
        batched = tiny_model(inp, torch.tensor([[3.0, 2.5]]))
        for i in range(3):
            alone = tiny_model(inp[i:i + 1], torch.tensor([[3.0, 2.5]]))
            assert torch.allclose(batched[i:i + 1], alone, atol=1e-5)


def test_render_at_size_matches_the_equivalent_scale(tiny_model):
    with torch.no_grad():
        field = tiny_model.encode(torch.rand(1, 3, 5, 6))
        assert torch.equal(tiny_model.render(field, size=(15, 24)), tiny_model.render(field, scale=(3, 4)))


def test_training_step_reaches_every_head_parameter(tiny_model):
    model = models.make({"name": "continuous-gaussian", "args": {"encoder_spec": TINY_EDSR}})
    out = model(torch.rand(2, 3, 4, 4), torch.tensor([[2.5, 2.5]]))
    (out - torch.rand_like(out)).abs().mean().backward()
    for name in ("conv1.weight", "mlp.layers.0.weight", "mlp_offset.layers.0.weight",
                 "mlp_vector.layers.0.weight", "encoder.edsr.head.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_field_to_dtype(tiny_model):
    with torch.no_grad():
        field = tiny_model.encode(torch.rand(1, 3, 3, 3)).to(torch.float64)
    assert isinstance(field, GaussianField) and field.colour.dtype == torch.float64
    assert field.lr_size == (3, 3) and LATTICE_FACTOR == 2


def test_encoder_without_x4_features_is_rejected():
    with pytest.raises(ValueError, match="64 channels at x4"):
        models.make({"name": "continuous-gaussian", "args": {"encoder_spec": {"name": "edsr-baseline"}}})


@pytest.mark.slow
def test_official_hat_srx4_layout(reference_layout):
    entry = reference_layout["continuous-gaussian_hat-srx4"]
    model = models.make(entry["spec"])
    assert state_dict_layout(model) == entry["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny_model):
    inp = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        cpu = tiny_model(inp, torch.tensor([[3.0, 3.0]]))
        gpu = tiny_model.to("cuda")(inp.cuda(), torch.tensor([[3.0, 3.0]]))
    tiny_model.to("cpu")
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


NATIVE_CPU_BF16 = pytest.mark.skipif(not gaussian.cpu_bf16_native(),
                                     reason="this CPU has no native bf16 (it runs fp32 instead)")


@pytest.mark.parametrize("precision", ["tf32", pytest.param("bf16", marks=NATIVE_CPU_BF16)])
def test_reduced_precision_encode_stays_close_and_returns_fp32(tiny_model, precision):
    inp = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        exact = tiny_model.encode(inp)
        reduced = tiny_model.encode(inp, precision=precision)
    assert reduced.colour.dtype == reduced.cholesky.dtype == reduced.offset.dtype == torch.float32
    tolerance = 0.05 if precision == "bf16" else 1e-5  # TF32 only changes CUDA arithmetic
    for a, b in ((exact.colour, reduced.colour), (exact.cholesky, reduced.cholesky), (exact.offset, reduced.offset)):
        assert (a - b).abs().max() <= tolerance * max(1.0, a.abs().max().item())
    if precision == "bf16":
        assert not torch.equal(exact.colour, reduced.colour)


def test_cpu_bf16_without_native_support_warns_once_and_runs_fp32(tiny_model, monkeypatch):
    monkeypatch.setattr(gaussian, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(gaussian, "_warned_cpu_bf16", False)
    inp = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        exact = tiny_model.encode(inp)
        with pytest.warns(RuntimeWarning, match="no native bf16"):
            first = tiny_model.encode(inp, precision="bf16")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second warning would raise
            second = tiny_model.encode(inp, precision="bf16")
    for field in (first, second):
        assert torch.equal(field.colour, exact.colour) and torch.equal(field.cholesky, exact.cholesky)


def test_cpu_bf16_native_is_a_bool():
    assert isinstance(gaussian.cpu_bf16_native(), bool)


def test_precision_flags_are_restored_and_unknown_precision_rejected(tiny_model):
    before = torch.backends.cuda.matmul.allow_tf32
    with torch.no_grad():
        tiny_model.encode(torch.rand(1, 3, 3, 3), precision="tf32")
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(ValueError, match="unknown precision"):
        tiny_model.encode(torch.rand(1, 3, 3, 3), precision="fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_does_not_synchronise_with_the_host(tiny_model):
    import rasterizer

    if "triton" not in rasterizer.BACKENDS:
        pytest.skip("triton is not installed")
    model = tiny_model.to("cuda")
    try:
        with torch.no_grad():
            field = model.encode(torch.rand(1, 3, 8, 9, device="cuda"))
            model.render(field, scale=(3.0, 2.5), backend="triton")  # compile outside the check
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                model.render(field, scale=(3.0, 2.5), backend="triton")
            finally:
                torch.cuda.set_sync_debug_mode(0)
    finally:
        tiny_model.to("cpu")


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of the head 4 LR pixels large: a 6x7 image splits into rows and columns of chunks."""
    monkeypatch.setattr(gaussian, "HEAD_CHUNK_PIXELS", 4)


def whole_image_field(model: torch.nn.Module, inp: torch.Tensor) -> GaussianField:
    """The field computed as one chunk (a chunk larger than the image)."""
    saved = gaussian.HEAD_CHUNK_PIXELS
    gaussian.HEAD_CHUNK_PIXELS = inp.shape[-2] * inp.shape[-1]
    try:
        return model.encode(inp)
    finally:
        gaussian.HEAD_CHUNK_PIXELS = saved


def field_error(a: GaussianField, b: GaussianField) -> float:
    return max(float((getattr(a, n) - getattr(b, n)).abs().max()) for n in ("colour", "cholesky", "offset"))


@pytest.mark.parametrize("chunk,calls", [(3, 18), (4, 12), (15, 3), (42, 1)])
def test_head_in_chunks_equals_one_chunk(tiny_model, monkeypatch, chunk, calls):
    """Chunks of parts of rows (3, 4: three or two per row of 7 pixels), of whole rows (15: two rows of 7) or
    the whole image (42)."""
    inp = torch.rand(2, 3, 6, 7)
    with torch.no_grad():
        reference = whole_image_field(tiny_model, inp)
        monkeypatch.setattr(gaussian, "HEAD_CHUNK_PIXELS", chunk)
        done = []
        chunked = tiny_model.encode(inp, on_chunk=done.append)
    assert field_error(chunked, reference) < 1e-5
    assert len(done) == calls and sum(done) == 6 * 7


@pytest.mark.parametrize("core", [(0, 0, 6, 7), (2, 3, 5, 6), (0, 4, 1, 5), (5, 0, 6, 7), (3, 0, 6, 1)])
def test_a_core_is_its_part_of_the_whole_field(tiny_model, small_chunks, core):
    """Cores inside the image and along its edges: the head reads the features around the core (its
    convolution's ring), so the core's cells are those of the whole image's field."""
    inp = torch.rand(1, 3, 6, 7)
    top, left, bottom, right = core
    with torch.no_grad():
        whole = whole_image_field(tiny_model, inp)
        done = []
        part = tiny_model.encode(inp, core=core, on_chunk=done.append)
    f = LATTICE_FACTOR
    crop = GaussianField(*(t[:, f * top:f * bottom, f * left:f * right] for t in (whole.colour, whole.cholesky,
                                                                                    whole.offset)))
    assert part.lr_size == (bottom - top, right - left)
    assert field_error(part, crop) < 1e-5
    assert sum(done) == (bottom - top) * (right - left)


@pytest.mark.parametrize("core", [(0, 0, 7, 7), (3, 3, 3, 5), (-1, 0, 4, 4), (0, 6, 4, 5)])
def test_a_core_outside_the_image_is_rejected(tiny_model, core):
    with pytest.raises(ValueError, match="not a region"):
        tiny_model.encode(torch.rand(1, 3, 6, 7), core=core)


def test_training_through_chunks_reaches_the_encoder(small_chunks):
    """Gradients flow through the chunks' writes into the field (the same as through one chunk)."""
    grads = []
    for chunk in (4, 30):
        gaussian.HEAD_CHUNK_PIXELS = chunk
        torch.manual_seed(0)
        model = models.make({"name": "continuous-gaussian", "args": {"encoder_spec": TINY_EDSR}})
        field = model.encode(torch.rand(1, 3, 5, 6))
        (field.colour.sum() + field.cholesky.sum() + field.offset.sum()).backward()
        grads.append(model.encoder.edsr.head[0].weight.grad)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
