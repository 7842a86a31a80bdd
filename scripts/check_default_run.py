"""CI check of the embedded default run: finished within 10 minutes, test top-1 within 1.0 pp of the dense model."""

import json
import sys
from pathlib import Path

report = json.loads((Path(sys.argv[1]) / "report.json").read_text())
dense, pruned = report["test"]["dense"]["top1"], report["test"]["pruned"]["top1"]
macs = report["pruned"]["macs"] / report["dense"]["macs"]
print(
    f"default run: {report['wall_s']:.0f} s, MACs {100 * macs:.1f}%, test top-1 dense {dense:.2f}% pruned {pruned:.2f}%"
)
ok = report["wall_s"] <= 600 and dense - pruned <= 1.0 and report["pruned"]["macs"] <= report["target_macs"]
sys.exit(0 if ok else 1)
