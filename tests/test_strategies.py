"""A strategy written outside the package trains through the public ``Strategy.train``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from conftest import class_folder

from headstart.api import fit
from headstart.freezing import freeze_bottom
from headstart.inference import from_pretrained
from headstart.strategies import Strategy
from headstart.training import TrainSettings


@dataclass
class LastBlockOnly(Strategy):
    """Freeze all but the last backbone block (and the head); no head warm-up; one epoch."""

    name: ClassVar[str] = "last-block"
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=1, patience=None))

    def run(self, model, data, ctx):
        freeze_bottom(model, 2)  # the last backbone block + the classifier
        self.before = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.trained = {name for name, p in model.named_parameters() if p.requires_grad}
        return self.train(model, data, ctx)


def test_a_custom_strategy_trains_only_what_it_left_unfrozen(tmp_path):
    data = class_folder(tmp_path / "data", per_class=6)
    strategy = LastBlockOnly()
    out = tmp_path / "run"
    run = fit(data, strategy=strategy, out=out, backbone="efficientnet_lite0", image_size=32, batch_size=4, quiet=True, report=False)

    model = run.model
    last = {id(p) for p in [*model.backbone.blocks[-1].module.parameters(), *model.head.parameters()]}
    assert strategy.trained == {name for name, p in model.named_parameters() if id(p) in last}
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), strategy.before[name])}
    assert changed and changed <= strategy.trained  # nothing frozen moved
    assert any(name.startswith("head") for name in changed) and any(not name.startswith("head") for name in changed)
    assert [r["phase"] for r in run.history.epochs] == ["last-block"] and len(run.history.audits) == 1

    config = json.loads((out / "config.json").read_text())
    assert config["training"]["strategy"]["name"] == "last-block"
    saved = from_pretrained(out).state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
