"""``Plan``: the JSON-serialisable result of a search. Surgery applies it to a fresh model; plans can be replayed,
validated and diffed.

Per layer (module path): for each channel group (``qk``, ``v`` for attention; ``hidden`` for an MLP) the original
shape ``[heads, width]`` and the kept channel indices of every head (indices within the head, sorted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PLAN_FORMAT = 1


class PlanError(ValueError):
    """A plan does not fit the model, or is malformed."""


@dataclass
class LayerPlan:
    kind: str
    shapes: dict[str, list[int]]
    keep: dict[str, list[list[int]]]

    def kept_width(self, group: str) -> int:
        return len(self.keep[group][0])

    def validate(self, path: str) -> None:
        if set(self.shapes) != set(self.keep):
            raise PlanError(f"plan layer {path}: groups {sorted(self.keep)} do not match shapes {sorted(self.shapes)}")
        for g, heads in self.keep.items():
            h, d = self.shapes[g]
            if len(heads) != h:
                raise PlanError(f"plan layer {path}.{g}: {len(heads)} heads listed, the layer has {h}")
            widths = {len(idx) for idx in heads}
            if len(widths) != 1:
                raise PlanError(
                    f"plan layer {path}.{g}: heads keep unequal numbers of channels {sorted(widths)}; every "
                    f"head must keep the same width"
                )
            if 0 in widths:
                raise PlanError(f"plan layer {path}.{g}: a head keeps no channel")
            for i, idx in enumerate(heads):
                if any((not isinstance(c, int)) or c < 0 or c >= d for c in idx):
                    raise PlanError(f"plan layer {path}.{g} head {i}: index out of range [0, {d})")
                if len(set(idx)) != len(idx):
                    raise PlanError(f"plan layer {path}.{g} head {i}: duplicated channel indices")
                if idx != sorted(idx):
                    raise PlanError(f"plan layer {path}.{g} head {i}: indices must be sorted")


@dataclass
class Plan:
    """Kept channels per layer plus the costs before and after (MACs per image, parameters)."""

    layers: dict[str, LayerPlan]
    input_size: list[int]
    dense_macs: int
    dense_params: int
    pruned_macs: int
    pruned_params: int
    target_macs: int | None = None
    architecture: str | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "architecture": self.architecture,
            "input_size": list(self.input_size),
            "target_macs": self.target_macs,
            "dense": {"macs": self.dense_macs, "params": self.dense_params},
            "pruned": {"macs": self.pruned_macs, "params": self.pruned_params},
            "layers": {p: {"kind": lp.kind, "shapes": lp.shapes, "keep": lp.keep} for p, lp in self.layers.items()},
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        try:
            if d.get("format") != PLAN_FORMAT:
                raise PlanError(f"unsupported plan format {d.get('format')!r} (this version reads {PLAN_FORMAT})")
            layers = {
                p: LayerPlan(
                    v["kind"],
                    {g: list(s) for g, s in v["shapes"].items()},
                    {g: [list(h) for h in k] for g, k in v["keep"].items()},
                )
                for p, v in d["layers"].items()
            }
            plan = cls(
                layers,
                list(d["input_size"]),
                int(d["dense"]["macs"]),
                int(d["dense"]["params"]),
                int(d["pruned"]["macs"]),
                int(d["pruned"]["params"]),
                d.get("target_macs"),
                d.get("architecture"),
                d.get("meta", {}),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise PlanError(f"malformed plan: missing or wrong entry {e}") from e
        for p, lp in plan.layers.items():
            lp.validate(p)
        return plan

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise PlanError(f"plan is not valid JSON: {e}") from e

    def save(self, path: str | Path) -> None:
        from ..utils import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        p = Path(path)
        if not p.exists():
            raise PlanError(f"plan file {p} does not exist")
        return cls.from_json(p.read_text())

    def with_target(self, target: int | None) -> Plan:
        self.target_macs = target
        return self

    def widths(self) -> dict[str, dict[str, int]]:
        """Kept channels per head, per layer and group."""
        return {p: {g: lp.kept_width(g) for g in lp.keep} for p, lp in self.layers.items()}

    def diff(self, other: Plan) -> dict[str, dict[str, tuple[int, int]]]:
        """Layers/groups whose kept width per head differs: ``{path: {group: (self, other)}}``."""
        a, b = self.widths(), other.widths()
        out = {}
        for p in sorted(set(a) | set(b)):
            ga, gb = a.get(p, {}), b.get(p, {})
            d = {g: (ga.get(g, 0), gb.get(g, 0)) for g in sorted(set(ga) | set(gb)) if ga.get(g) != gb.get(g)}
            if d:
                out[p] = d
        return out

    def summary(self) -> str:
        lines = [f"{'layer':<40} " + "  ".join(f"{g:>9}" for g in ("qk", "v", "hidden"))]
        for p, lp in self.layers.items():
            cells = []
            for g in ("qk", "v", "hidden"):
                cells.append(f"{lp.kept_width(g):>4}/{lp.shapes[g][1]:<4}" if g in lp.keep else " " * 9)
            lines.append(f"{p:<40} " + "  ".join(cells))
        ratio = self.pruned_macs / self.dense_macs
        lines.append(
            f"MACs {self.dense_macs:,} -> {self.pruned_macs:,} ({100 * ratio:.1f}%); params "
            f"{self.dense_params:,} -> {self.pruned_params:,}"
        )
        return "\n".join(lines)
