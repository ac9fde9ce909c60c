"""The training loop: model set-up, optimiser steps, validation, resumable state, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cmrecon.models.device import resolve_device
from cmrecon.models.train_config import TARGET_KEYS, ConfigError, OptimSection, TrainConfig, config_from_dict, same_run
from cmrecon.models.train_data import MODEL_INPUTS, batches, make_validation_set
from cmrecon.models.train_losses import training_loss
from cmrecon.models.weights import atomic_torch_save

__all__ = ["STATE_FORMAT", "TrainResult", "build_model", "image_metrics", "init_weights",
           "learning_rate", "train", "validate"]

#: Format tag of the resumable training state (``last.pt``).
STATE_FORMAT = "cmrecon.psirnet.trainstate/1"


def build_model(cfg: TrainConfig):
    """The :class:`~cmrecon.models.psirnet.PSIRNet` of ``cfg.model`` (preset + overrides)."""
    from cmrecon.models.psirnet import PSIRNet
    return PSIRNet.from_preset(cfg.model.preset, **cfg.model.overrides())


def _autocast(device: torch.device, amp: str):
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use else nullcontext()


def _unets_return_float32(model: torch.nn.Module) -> None:
    """Cast every U-Net's output back to float32 (under bf16 autocast the convolutions run in
    bf16, but the NormUnet wrappers rebuild complex64 tensors from the U-Net output).
    """
    from cmrecon.models.unet import Unet
    for m in model.modules():
        if isinstance(m, Unet) and not getattr(m, "_cmrecon_f32_hook", False):
            m.register_forward_hook(lambda mod, inp, out: out.float())
            m._cmrecon_f32_hook = True


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def learning_rate(optim: OptimSection, step: int, epoch: int) -> float:
    """``lr · min(1, (step + 1) / warmup_steps) · lr_decay ** epoch`` (step, epoch from 0)."""
    warm = optim.warmup_steps
    ramp = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    return optim.lr * ramp * optim.lr_decay ** epoch


def image_metrics(pred: np.ndarray, ref: np.ndarray, heart: np.ndarray,
                  body: np.ndarray) -> dict[str, float]:
    """The metrics of :func:`validate` of one prediction against ``ref``, all ``(RO, PE)``."""
    from cmrecon.metrics import nrmse, psnr, ssim
    lo, rng = float(ref.min()), float(ref.max() - ref.min())
    p, r = (pred - lo) / rng, (ref - lo) / rng  # the published convention: target's min–max
    return {
        "ssim": ssim(p, r, data_range=1.0),
        "ssim_heart": ssim(p, r, data_range=1.0, mask=heart),
        "ssim_raw": ssim(pred, ref, data_range=rng),
        "psnr": psnr(pred, ref, data_range=rng),
        "nrmse": nrmse(pred, ref),
        "nrmse_body": nrmse(pred, ref, mask=body),
        "nrmse_heart": nrmse(pred, ref, mask=heart),
    }


@torch.no_grad()
def validate(model: torch.nn.Module, val_set: list[dict[str, Any]], cfg: TrainConfig,
             device: torch.device) -> dict[str, float]:
    """Mean loss and image metrics of ``model`` on the validation set.

    Metrics (:mod:`cmrecon.metrics`) against both ``target_moco_noisy`` (prefix ``moco_``) and
    ``target_clean`` (prefix ``clean_``): SSIM (7×7) of both images min–max scaled with the
    reference's range (the published convention; ``ssim_raw`` on unscaled values — SSIM's
    luminance term is not shift invariant, so the two differ), heart-region SSIM, PSNR (dB,
    peak = reference range), NRMSE over the whole image, the body and the heart region.

    Returns
    -------
    dict
        ``loss`` (mean :func:`training_loss` against the training target) and
        ``<target>_<metric>`` means.
    """
    model.eval()
    amp = cfg.train.amp
    key = TARGET_KEYS[cfg.target.kind]
    sums: dict[str, float] = {}
    for sample in val_set:
        s = _to(sample, device)
        with _autocast(device, amp):
            pred = model(*(s[k] for k in MODEL_INPUTS)).float()
        row = {"loss": float(training_loss(pred, s[key], cfg.loss))}
        p = pred[0, 0].cpu().numpy()
        heart = sample["heart_mask"][0, 0].numpy()
        body = sample["body_mask"][0, 0].numpy()
        for prefix, tkey in (("moco", "target_moco_noisy"), ("clean", "target_clean")):
            ref = sample[tkey][0, 0].numpy()
            row.update({f"{prefix}_{k}": v for k, v in image_metrics(p, ref, heart, body).items()})
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
    model.train()
    return {k: v / len(val_set) for k, v in sums.items()}


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    out_dir : Path
        Output folder.
    steps : int
        Optimiser steps taken in total (including those before a resume).
    samples : int
        Training samples seen in total.
    last_val : dict
        Metrics of the last validation (empty if none ran).
    best_val_loss : float
        Lowest validation loss seen.
    wall_s : float
        Wall time of this call, seconds.
    finished : bool
        True when all epochs ran (False when stopped by ``max_steps``).
    """

    out_dir: Path
    steps: int
    samples: int
    last_val: dict[str, float]
    best_val_loss: float
    wall_s: float
    finished: bool


def _log(fh, row: dict[str, Any]) -> None:
    fh.write(json.dumps(row, sort_keys=True) + "\n")
    fh.flush()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after ``step`` (by a run that was interrupted after its checkpoint)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def init_weights(model: torch.nn.Module, spec: str, device: torch.device) -> None:
    """Copy verified weights (a shipped name or a checkpoint path) into ``model`` (fine-tuning).

    Raises
    ------
    ConfigError
        The checkpoint's architecture differs from the run's model (the message lists the
        first mismatching keys).
    """
    from cmrecon.models.shipped import resolve_weights
    from cmrecon.models.weights import load_checkpoint

    path, sha = resolve_weights(spec)
    source = load_checkpoint(path, expected_sha256=sha, map_location=device).model.state_dict()
    target = model.state_dict()
    bad = sorted(k for k in set(source) | set(target)
                 if k not in source or k not in target or source[k].shape != target[k].shape)
    if bad:
        raise ConfigError(f"train.init_weights = {spec!r} does not fit the run's model "
                          f"({len(bad)} mismatching tensors, e.g. {', '.join(bad[:3])})")
    model.load_state_dict(source, strict=True)


def train(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
          max_steps: int | None = None, stream=None) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; write everything to ``out_dir``.

    Parameters
    ----------
    cfg : TrainConfig
        The run (see :class:`TrainConfig`).
    out_dir : str or PathLike
        Output folder (created). Without ``resume`` an existing ``last.pt`` is an error.
    resume : bool
        Continue from ``out_dir/last.pt``; its config must equal ``cfg`` except
        ``train.epochs`` / ``num_workers`` / logging and checkpoint intervals.
    max_steps : int, optional
        Stop after this many optimiser steps in total (a checkpoint is written), e.g. to
        test resuming.
    stream : file, optional
        Where progress lines go (stderr by default).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Existing run without ``resume``, missing or mismatched state on ``resume``, a
        non-finite loss.
    """
    from cmrecon.models.weights import save_checkpoint

    stream = stream or sys.stderr
    t_start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "last.pt", out / "metrics.jsonl"
    device = resolve_device(cfg.train.device, "train.device")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    amp = cfg.train.amp

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg).to(device)
    _unets_return_float32(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay)
    bpe = cfg.train.batches_per_epoch
    step, best_loss, elapsed_before = 0, math.inf, 0.0
    if resume:
        if not state_path.is_file():
            raise ConfigError(f"--resume: no training state at {str(state_path)!r}")
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{str(state_path)!r} is not a training state ({STATE_FORMAT})")
        try:
            stored = config_from_dict(state["config"])
        except ConfigError as exc:
            raise ConfigError(f"--resume: the config in {str(state_path)!r}: {exc}") from None
        if not same_run(stored, cfg):
            raise ConfigError(f"--resume: the config differs from the one in {str(state_path)!r} "
                              f"(only train.epochs and logging/worker settings may change)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, best_loss = int(state["step"]), float(state["best_val_loss"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        _truncate_log(log_path, step)
        print(f"train {cfg.name}: resumed at step {step} (epoch {step // bpe})", file=stream,
              flush=True)
    elif state_path.exists():
        raise ConfigError(f"{str(state_path)!r} exists: pass --resume to continue that run, "
                          f"or choose another --out")
    elif cfg.train.init_weights:
        init_weights(model, cfg.train.init_weights, device)
        print(f"train {cfg.name}: starting from the weights of {cfg.train.init_weights}",
              file=stream, flush=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    from cmrecon.models.psirnet import count_parameters
    val_set = make_validation_set(cfg)
    key = TARGET_KEYS[cfg.target.kind]
    epochs = cfg.train.epochs
    total_steps = epochs * bpe
    stop_at = total_steps if max_steps is None else min(total_steps, int(max_steps))
    log_every = max(1, cfg.train.log_every_steps)
    ckpt_every = cfg.train.checkpoint_every_steps
    bsz = cfg.train.batch_size
    print(f"train {cfg.name}: {count_parameters(model):,} parameters on {device} "
          f"(amp {amp}, {torch.get_num_threads()} threads); {epochs} epochs × {bpe} batches × "
          f"{bsz}; validation {len(val_set)} samples", file=stream, flush=True)

    def save_state() -> None:
        atomic_torch_save({
            "format": STATE_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "step": step, "best_val_loss": best_loss,
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": elapsed_before + time.monotonic() - t_start,
        }, state_path)

    def weights_metrics(val: dict[str, float]) -> dict[str, Any]:
        return {"step": step, "epoch": step // bpe, "samples": step * bsz,
                "target": cfg.target.kind, "val": val, "run": cfg.name}

    last_val: dict[str, float] = {}
    window_t, window_n, run_loss = time.monotonic(), 0, []
    with open(log_path, "a") as logf:
        while step < stop_at:
            epoch = step // bpe
            epoch_end = min((epoch + 1) * bpe, stop_at)
            for batch in batches(cfg, step, epoch_end):
                lr = learning_rate(cfg.optim, step, epoch)
                for group in opt.param_groups:
                    group["lr"] = lr
                b = _to(batch, device)
                with _autocast(device, amp):
                    pred = model(*(b[k] for k in MODEL_INPUTS))
                loss = training_loss(pred, b[key], cfg.loss)
                if not torch.isfinite(loss):
                    raise ConfigError(f"non-finite loss {float(loss)} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
                opt.step()
                step += 1
                window_n += 1
                run_loss.append(loss.item())
                if step % log_every == 0 or step == epoch_end:
                    now = time.monotonic()
                    rate = window_n * bsz / max(now - window_t, 1e-9)
                    row = {"kind": "train", "step": step, "epoch": epoch, "lr": lr,
                           "loss": float(np.mean(run_loss)), "samples_per_s": rate,
                           "coils": int(b["ir_kspace"].shape[1]),
                           "size": list(b["ir_kspace"].shape[-2:]),
                           "elapsed_s": elapsed_before + now - t_start}
                    _log(logf, row)
                    print(f"train {cfg.name}: epoch {epoch + 1}/{epochs} step {step}/{total_steps}"
                          f" loss {row['loss']:.4f} lr {lr:.2e} {rate:.2f} samples/s",
                          file=stream, flush=True)
                    window_t, window_n, run_loss = now, 0, []
                if ckpt_every > 0 and step % ckpt_every == 0 and step < epoch_end:
                    save_state()
            if step % bpe == 0 and (step // bpe) % cfg.validation.every_epochs == 0 \
                    or step == total_steps:
                last_val = validate(model, val_set, cfg, device)
                row = {"kind": "val", "step": step, "epoch": step // bpe - 1,
                       "elapsed_s": elapsed_before + time.monotonic() - t_start, **last_val}
                _log(logf, row)
                print(f"val {cfg.name}: step {step} loss {last_val['loss']:.4f} "
                      f"moco SSIM {last_val['moco_ssim']:.4f} NRMSE {last_val['moco_nrmse']:.4f}"
                      f" heart {last_val['moco_nrmse_heart']:.4f} | clean SSIM "
                      f"{last_val['clean_ssim']:.4f} heart NRMSE "
                      f"{last_val['clean_nrmse_heart']:.4f}", file=stream, flush=True)
                if last_val["loss"] < best_loss:
                    best_loss = last_val["loss"]
                    save_checkpoint(out / "best.pt", model, model.model_config(),
                                    weights_metrics(last_val))
            save_state()
    finished = step >= total_steps
    if finished:
        save_checkpoint(out / "final.pt", model, model.model_config(), weights_metrics(last_val))
    wall = time.monotonic() - t_start
    print(f"train {cfg.name}: {'finished' if finished else 'stopped'} at step {step} "
          f"({step * bsz} samples) in {wall:.0f} s", file=stream, flush=True)
    return TrainResult(out_dir=out, steps=step, samples=step * bsz, last_val=last_val,
                       best_val_loss=best_loss, wall_s=wall, finished=finished)


