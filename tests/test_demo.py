"""`percepta demo --quick`: the whole main job runs end to end and writes its outputs."""

from __future__ import annotations

import json

import pytest

from percepta import cli


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo must find its config from anywhere
    out = tmp_path / "runs" / "demo"
    code = cli.main(["demo", "--quick", "--out", str(out), "--data-dir", str(tmp_path / "builtin")])
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    for key in ("AP", "AP50", "oLRP"):
        assert key in result["metrics"]
    assert len(result["per_class"]) == 6
    assert result["onnx"]["parity"]["ok"] is True
    html = (out / "report.html").read_text()
    assert "Per class" in html and "data:image/png;base64" in html
    assert (out / "checkpoints" / "last.pt").is_file()
    assert len(list((out / "predictions").glob("*.png"))) > 0
