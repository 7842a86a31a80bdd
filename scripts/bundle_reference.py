"""Copy a finished `mhaprune train` run into the package as bundled reference weights.

    python scripts/bundle_reference.py runs/ref_flatten_swin_micro flatten_swin_micro

Writes src/mhaprune/weights/NAME/{config.json, model.safetensors, train_log.jsonl, TRAINING.md}.
"""

import json
import shutil
import sys
from pathlib import Path

run, name = Path(sys.argv[1]), sys.argv[2]
dest = Path(__file__).resolve().parents[1] / "src" / "mhaprune" / "weights" / name
dest.mkdir(parents=True, exist_ok=True)
cfg = json.loads((run / "config.json").read_text())
if cfg["architecture"] != name:
    sys.exit(f"{run} holds {cfg['architecture']}, not {name}")
shutil.copy(run / "model.safetensors", dest / "model.safetensors")
shutil.copy(run / "config.json", dest / "config.json")
shutil.copy(run / "metrics.jsonl", dest / "train_log.jsonl")
info = json.loads((run / "run.json").read_text())
m = cfg.get("metrics", {})
(dest / "TRAINING.md").write_text(
    f"# {name}: bundled reference weights\n\n"
    f"Trained here on Fashion-MNIST (55,000 train images; 5,000 held out for validation) with:\n\n"
    f"```bash\n{cfg.get('train_command', '')}\n```\n\n"
    f"| split | top-1 |\n|---|---|\n| validation | {m.get('val_top1', float('nan')):.2f}% |\n"
    f"| test (10,000) | {m.get('test_top1', float('nan')):.2f}% |\n\n"
    f"Machine: {info['machine']['cpu']} ({info['machine']['cores']} cores, {info['machine']['torch_threads']} torch "
    f"threads); torch {info['torch']}; mhaprune {info['mhaprune']} at git {info['git']}.\n"
    f"`train_log.jsonl` is the run's metrics log.\n"
)
print(f"bundled {run} -> {dest}")
