"""Train the PSIRNet-style model on simulated LGE samples: ``cmrecon train psirnet --config``.

Recipe (PSIRNet, arXiv 2604.08781; docs/physics.md §5):

* **Data**: :func:`cmrecon.sim.training.make_sample` generated on the fly — random anatomy,
  coil count, SNR, acceleration R, partial Fourier, field strength, TI, heart rate, number of
  MOCO repeats, coil maps true or estimated from ACS. Input = one IR/PD repeat; target = the
  MOCO-style PSIR of that case (``target_moco_noisy``, the published yardstick) or the
  noise-free target (``target.kind: clean``).
* **Loss**: ``1 − SSIM`` with a 7×7 box window, prediction and target min–max scaled with the
  *target's* range (:func:`ssim_loss`: the formula of :func:`cmrecon.metrics.ssim`, on
  tensors), plus optionally ``loss.l1`` × the mean absolute PSIR error (:func:`training_loss`
  says why).
* **Optimiser**: AdamW (lr 6e-4, weight decay 1e-3); learning rate linear warm-up over
  ``warmup_steps`` steps, times ``lr_decay ** epoch`` (0.98).
* **Validation**: a fixed held-out simulated set, its seeds disjoint from every training seed
  by construction (:func:`make_validation_set`); metrics against the noisy MOCO target and the
  clean (noise-free) target, over the body and the heart region (:func:`validate`).
* **Determinism & resume**: every batch is a pure function of ``(seed, global batch index)``,
  the learning rate a pure function of ``(step, epoch)``; ``last.pt`` holds model, optimiser,
  position and RNG state, so ``--resume`` continues bit for bit (same device and threads).
* **Devices**: CPU, or CUDA with bf16 autocast around the U-Nets (``amp: auto``).

Outputs in ``--out`` (default ``runs/<name>``): ``config.yaml`` (resolved), ``metrics.jsonl``
(one JSON object per logged training step and per validation), ``last.pt`` (training state),
``best.pt`` / ``final.pt`` (:func:`cmrecon.models.weights.save_checkpoint` format with a
sha256 sidecar; ``best`` by validation loss).

This module is the training API; the code lives in one module per responsibility:
:mod:`~cmrecon.models.train_config` (typed sections), :mod:`~cmrecon.models.train_data`
(batches, validation set), :mod:`~cmrecon.models.train_losses` and
:mod:`~cmrecon.models.train_loop` (model set-up, steps, validation, state, checkpoints); the
command line in :mod:`~cmrecon.models.train_cli`.

References
----------
PSIRNet: arXiv 2604.08781; github.com/microsoft/psirnet (MIT).
Sriram A et al. End-to-end variational networks for accelerated MRI reconstruction. MICCAI 2020.
Hammernik K et al. Learning a variational network for reconstruction of accelerated MRI data.
MRM 2018;79:3055.
Wang Z et al. IEEE TIP 2004;13:600 (SSIM). Loshchilov I, Hutter F. ICLR 2019 (AdamW).
"""

from cmrecon.models.train_config import ConfigError, TrainConfig, config_from_dict, load_config
from cmrecon.models.train_data import MODEL_INPUTS, batch_for, make_validation_set
from cmrecon.models.train_loop import TrainResult, build_model, image_metrics, learning_rate, train, validate
from cmrecon.models.train_losses import ssim_loss, training_loss

__all__ = ["ConfigError", "MODEL_INPUTS", "TrainConfig", "TrainResult", "batch_for",
           "build_model", "config_from_dict", "image_metrics", "learning_rate", "load_config",
           "make_validation_set", "ssim_loss", "train", "training_loss", "validate"]
