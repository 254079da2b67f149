"""IQT: structure (post-LN, standard heads), M-crop averaging, input conventions, local weights,
ONNX parity. Tiny models (timm's ``test_resnet`` taps, 64 px crops); expected values are written
out by hand or computed by a different route (a loop over single crops)."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from percepta.errors import DataError, PerceptaError
from percepta.quality.iqt import IQTCConfig, IQTConfig, build_iqt, grid_offsets

# the tests export through torch.onnx's TorchScript exporter, as percepta.export does (which
# silences the same deprecation notice)
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]


TINY = IQTConfig(
    backbone="test_resnet",
    crop_size=64,
    d_model=16,
    num_heads=2,
    ffn_dim=32,
    head_dim=8,
    test_crops=4,
    score_range=[1.0, 5.0],
)


def _u8(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_iqt(TINY).eval()


def test_presets_match_the_paper_table():
    """Notes section 1.6: IQT crop 256, L=2, D=256, H=4, FFN 1024, head 512; IQT-C 192/1/128/128."""
    a, c = IQTConfig(), IQTCConfig()
    got = [
        (x.crop_size, x.num_layers, x.d_model, x.num_heads, x.ffn_dim, x.head_dim) for x in (a, c)
    ]
    assert got == [(256, 2, 256, 4, 1024, 512), (192, 1, 128, 4, 1024, 128)]
    assert a.backbone == c.backbone == "inception_resnet_v2"


def test_post_ln_layers_and_standard_head_width(model):
    layers = list(model.encoder.layers) + list(model.decoder.layers)
    assert len(layers) == 2 * TINY.num_layers
    assert all(layer.norm_first is False for layer in layers)
    d = TINY.d_model
    for layer in layers:  # standard MHA: Q, K, V each D -> D (head width D / H), not D -> H*D
        assert layer.self_attn.in_proj_weight.shape == (3 * d, d)
        assert layer.self_attn.head_dim == d // TINY.num_heads
    assert model.encoder.norm is None and model.decoder.norm is None  # post-LN: no final norm


def test_grid_offsets_by_hand():
    # 64x80 image, 64 crop, M=4: n=2 per axis, tops [0, 0], lefts [0, 16]
    assert grid_offsets(64, 80, 64, 4) == [(0, 0), (0, 16), (0, 0), (0, 16)]
    # 100x100, crop 64, M=5: n=3, offsets [0, 18, 36], row-major, first 5
    assert grid_offsets(100, 100, 64, 5) == [(0, 0), (0, 18), (0, 36), (18, 0), (18, 18)]


def test_m_crop_batched_equals_a_loop_over_single_crops(model):
    """Tolerance 1e-5: the same network on batches of different sizes."""
    dist, ref = _u8(3, 64, 80, seed=1), _u8(3, 64, 80, seed=2)
    dist2, ref2 = _u8(3, 70, 64, seed=3), _u8(3, 70, 64, seed=4)
    with torch.no_grad():
        got = model([dist, dist2], [{"reference": ref}, {"reference": ref2}])
        expected = []
        for d, r, offsets in (
            (dist, ref, [(0, 0), (0, 16), (0, 0), (0, 16)]),
            (dist2, ref2, [(0, 0), (0, 0), (6, 0), (6, 0)]),
        ):
            units = [
                model.score_crops(
                    d[None, :, t : t + 64, x : x + 64].float() / 255,
                    r[None, :, t : t + 64, x : x + 64].float() / 255,
                )
                for t, x in offsets
            ]
            expected.append(1.0 + 4.0 * torch.cat(units).mean())
    for p, e in zip(got, expected):
        assert p["score"].shape == ()
        torch.testing.assert_close(p["score"], e, atol=1e-5, rtol=0)


def test_uint8_and_float_inputs_agree(model):
    dist, ref = _u8(2, 3, 64, 64, seed=5), _u8(2, 3, 64, 64, seed=6)
    with torch.no_grad():
        a = model(dist, [{"reference": r} for r in ref])
        b = model(dist.float() / 255, [{"reference": r.float() / 255} for r in ref])
    for p, q in zip(a, b):
        torch.testing.assert_close(p["score"], q["score"], atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="0-1"):
        model(dist.float(), [{"reference": r} for r in ref])


def test_full_reference_errors(model):
    dist = _u8(3, 64, 64, seed=7)
    with pytest.raises(DataError, match="reference"):
        model([dist], [{"score": torch.tensor(1.0)}])
    with pytest.raises(DataError, match="reference is"):
        model([dist], [{"reference": _u8(3, 64, 72, seed=8)}])


def test_train_step_reaches_the_backbone_without_pretrained_weights():
    torch.manual_seed(0)
    model = build_iqt(TINY).train()
    dist, ref = _u8(2, 3, 72, 72, seed=9), _u8(2, 3, 72, 72, seed=10)
    targets = [{"reference": r, "score": torch.tensor(s)} for r, s in zip(ref, (2.0, 4.5))]
    loss = model(dist, targets)["loss_score"]
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_local_pretrained_weights_load_and_freeze(tmp_path):
    torch.manual_seed(123)
    state = timm.create_model("test_resnet").state_dict()
    path = tmp_path / "test_resnet.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    model = build_iqt(dataclasses.replace(TINY, pretrained_path=str(path)))
    loaded = model.backbone.body.state_dict()
    assert loaded  # the taps' modules, under their timm names
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training  # frozen BatchNorm statistics
    partial = {k: v for k, v in state.items() if not k.startswith("layer2")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(PerceptaError, match="backbone tensors missing"):
        build_iqt(dataclasses.replace(TINY, pretrained_path=str(tmp_path / "partial.pth")))
    with pytest.raises(PerceptaError, match="not found"):
        build_iqt(dataclasses.replace(TINY, pretrained_path=str(tmp_path / "absent.pth")))


def test_onnx_export_matches_pytorch(model, tmp_path):
    """score_crops exported with the legacy TorchScript exporter; tolerance 1e-4."""
    ort = pytest.importorskip("onnxruntime")

    class Crops(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, dist, ref):
            return self.m.score_crops(dist, ref)

    dist = _u8(2, 3, 64, 64, seed=11).float() / 255
    ref = _u8(2, 3, 64, 64, seed=12).float() / 255
    path = tmp_path / "iqt.onnx"
    wrapper = Crops(model).eval()
    torch.onnx.export(wrapper, (dist, ref), str(path), dynamo=False, opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    (got,) = sess.run(None, {names[0]: dist.numpy(), names[1]: ref.numpy()})
    with torch.no_grad():
        expected = wrapper(dist, ref)
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=0)
