"""The benchmark entry points run end to end (tiny settings) and write what they promise."""

import csv
import json

from benchmarks import speed


def test_speed_benchmark_writes_csv_json_plot(tmp_path):
    out = tmp_path / "speed"
    argv = ["--quick", "--models", "deit_micro", "--repeats", "1", "--no-onnx", "--out", str(out)]
    assert speed.main(argv) == 0
    with open(out / "speed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dense = next(r for r in rows if float(r["budget"]) == 1.0)
    pruned = [r for r in rows if float(r["budget"]) < 1.0]
    assert len(pruned) == 4  # 2 budgets x (round_to 1, 8)
    for r in pruned:
        assert int(r["macs"]) <= float(r["budget"]) * int(dense["macs"]) + 1
        assert float(r["speedup_torch_b32"]) > 0
    meta = json.loads((out / "speed.json").read_text())["meta"]
    assert meta["git"] is None or len(meta["git"].removesuffix("-dirty")) == 40
    assert "torch" in meta and meta["repeats"] == 1
    assert (out / "speed.png").stat().st_size > 10_000
