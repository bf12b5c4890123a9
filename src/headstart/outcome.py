"""What a training says about itself, read from its epoch records alone: its phases, which weights
were kept and from which phase, and whether overfitting was seen.

Pure functions of the records in ``history.json`` (no torch), so the CLI's end line, the run log,
``metrics.json``, the report, the web app and the demo say the same words, for runs saved before
these words existed too. Epochs are told per phase, as the progress bar counts them:
"fine-tune epoch 2/6" is the second of at most 6 fine-tuning epochs (``phase_epoch`` and
``phase_epochs`` in each record; the ``epoch`` field numbers epochs across phases for the curves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headstart.metrics import NOISE_SE, rise_exceeds_noise

WARMUP = "head warm-up"  # the phase that fits the new head on frozen features before any body weight moves

VERBS = {"fine-tune": "fine-tuning", "full": "training every block", "lora": "LoRA fine-tuning", "scratch": "training from scratch"}


def phase_name(phase: str, records: Sequence[dict[str, Any]]) -> str:
    """The phase as the page and the log name it: runs saved before the warm-up had its own name called it
    ``feature-extraction`` although another phase followed."""
    if phase == "feature-extraction" and any(r["phase"] != phase for r in records):
        return WARMUP
    return phase


def phases(epochs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive runs of epochs with the same phase: name, first and last epoch, epochs run and planned, best validation scores."""
    found: list[dict[str, Any]] = []
    for row in epochs:
        if not found or found[-1]["phase"] != row["phase"]:
            found.append({"phase": row["phase"], "name": phase_name(row["phase"], epochs), "first": row["epoch"], "last": row["epoch"], "epochs": 0,
                          "planned": row.get("phase_epochs"), "best_val_accuracy": row["val_accuracy"], "best_val_loss": row["val_loss"]})  # fmt: skip
        phase = found[-1]
        phase["last"] = row["epoch"]
        phase["epochs"] += 1
        phase["best_val_accuracy"] = max(phase["best_val_accuracy"], row["val_accuracy"])
        phase["best_val_loss"] = min(phase["best_val_loss"], row["val_loss"])
    for phase in found:
        phase["planned"] = phase["planned"] or phase["epochs"]
    return found


def phase_counts(epochs: Sequence[dict[str, Any]]) -> str:
    """``"40 head warm-up + 2 fine-tune"``: the epochs each phase ran."""
    return " + ".join(f"{p['epochs']} {p['name']}" for p in phases(epochs))


def epoch_label(epochs: Sequence[dict[str, Any]], epoch: int) -> str:
    """``"fine-tune epoch 2/6"``: epoch ``epoch`` (numbered across phases) told within its phase."""
    for phase in phases(epochs):
        if phase["first"] <= epoch <= phase["last"]:
            return f"{phase['name']} epoch {epoch - phase['first'] + 1}/{phase['planned']}"
    return f"epoch {epoch}"


def kept_weights(epochs: Sequence[dict[str, Any]], kept_epoch: int | None) -> dict[str, Any] | None:
    """Which weights the saved model holds: the phase, the epoch (across phases and within the phase) and the words.

    ``later_phase_won`` is False when a phase after the kept one ran and did not beat it on
    validation (a fine-tune that kept its head warm-up): ``sentence`` then says so.
    """
    found = phases(epochs)
    kept = next((p for p in found if kept_epoch is not None and p["first"] <= kept_epoch <= p["last"]), None)
    if kept is None or kept_epoch is None:
        return None
    index = found.index(kept)
    later = [p["name"] for p in found[index + 1:]]
    label = f"{kept['name']} epoch {kept_epoch - kept['first'] + 1}/{kept['planned']}"
    if later:
        doing = VERBS.get(later[0], later[0]) if len(later) == 1 else ", ".join(later)
        if kept["name"] == WARMUP:
            sentence = f"{doing} did not beat the head alone on validation; the head-only model ({label}) was saved"
        else:
            sentence = f"{doing} did not beat {kept['name']} on validation; the weights of {label} were saved"
    elif index > 0:
        before = "the head alone" if found[index - 1]["name"] == WARMUP else found[index - 1]["name"]
        sentence = f"{VERBS.get(kept['name'], kept['name'])} beat {before} on validation: the weights of {label} were saved"
    else:
        sentence = f"the weights of {label} (the best on validation) were saved"
    return {"phase": kept["name"], "epoch": kept_epoch, "phase_epoch": kept_epoch - kept["first"] + 1, "phase_epochs": kept["planned"],
            "last_phase": found[-1]["name"], "later_phase_won": not later, "label": label, "sentence": sentence}  # fmt: skip


def overfitting(epochs: Sequence[dict[str, Any]], kept_epoch: int | None) -> dict[str, Any]:
    """Flag epochs where validation loss rose for 2+ epochs while training loss fell, by more than the noise of the validation set.

    The rule: within one phase, epochs a, b, c in a row with val loss a < b < c and training loss
    a > b > c, and a rise c - a larger than :data:`~headstart.metrics.NOISE_SE` standard errors of
    the mean per-example validation loss at c (``val_loss_se``; see :func:`~headstart.metrics.rise_exceeds_noise`).
    On 4 validation examples that error is about as large as the loss, so a drift is not called overfitting;
    ``within_noise`` names the epochs that rose but not by more ("fine-tune epoch 3/6"); ``epochs``
    numbers the flagged ones across phases (as the records do).
    """
    flagged: list[int] = []
    quiet: list[int] = []
    worst: tuple[float, dict[str, Any], dict[str, Any]] | None = None
    for a, b, c in zip(epochs, epochs[1:], epochs[2:]):
        if not (a["phase"] == b["phase"] == c["phase"] and c["val_loss"] > b["val_loss"] > a["val_loss"] and c["train_loss"] < b["train_loss"] < a["train_loss"]):
            continue
        rise = c["val_loss"] - a["val_loss"]
        if rise_exceeds_noise(rise, c.get("val_loss_se")):
            flagged.append(c["epoch"])
            if worst is None or rise > worst[0]:
                worst = (rise, a, c)
        else:
            quiet.append(c["epoch"])
    if kept_epoch is None and epochs:
        kept_epoch = min(epochs, key=lambda r: r["val_loss"])["epoch"]
    kept = kept_weights(epochs, kept_epoch)
    message = ""
    if worst is not None:
        _, a, c = worst
        noise = f", more than {NOISE_SE:g} standard errors ({c['val_loss_se']:.3f}) of the mean loss over {c.get('val_n', '?')} validation examples" if c.get("val_loss_se") is not None else ""
        message = (f"overfitting: validation loss rose from {a['val_loss']:.3f} to {c['val_loss']:.3f} while training loss fell "
                   f"(at {', '.join(epoch_label(epochs, e) for e in flagged)}){noise}; "
                   + (f"the weights of {kept['label']} were kept" if kept else "the best weights were kept"))  # fmt: skip
    return {"detected": bool(flagged), "epochs": flagged, "within_noise": [epoch_label(epochs, e) for e in quiet], "best_epoch": kept_epoch, "message": message,
            "rule": f"validation loss rising two epochs in a row while training loss falls, by more than {NOISE_SE:g} standard errors of its mean over the validation examples"}  # fmt: skip
