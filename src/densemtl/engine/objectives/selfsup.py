"""Self-supervised depth (paper section 4.4): the Monodepth2 objective for the disparity task
on neighbour frames, the supervised losses for the other tasks; a pose network trained with
the model (or the dataset's known camera motion)."""

from __future__ import annotations

from ...losses import task_losses
from ...selfsup import PoseNet, self_supervised_depth_loss
from ..checkpoint import CheckpointError, load_checkpoint
from .base import Objective, StepContext, register_objective


@register_objective("selfsup")
class SelfSupervisedDepth(Objective):
    role = "primary"
    checkpoint_key = "posenet"

    @classmethod
    def enabled(cls, cfg):
        return bool(cfg.selfsup.enabled)

    def __init__(self, trainer):
        s = self.cfg = trainer.cfg.selfsup
        self.device, self.tasks, self.dataset = trainer.device, trainer.tasks, trainer.cfg.data.dataset
        self.init_parts = trainer.cfg.train.init_parts
        self.protocol = trainer.protocol
        if "disparity" not in self.tasks:
            raise ValueError("selfsup.enabled needs the 'disparity' task (e.g. tasks=SP)")
        if s.pose_source not in ("network", "dataset"):
            raise ValueError(f"selfsup.pose_source must be 'network' or 'dataset', got {s.pose_source!r}")
        self.posenet = None
        if s.pose_source == "network":
            # the pose network normalises its input like the model (Hoyer et al.'s: (x - 0.45) / 0.225)
            self.posenet = PoseNet(s.pose_backbone, pretrained=s.pose_pretrained or False,
                                   input_norm=trainer.model.input_norm).to(self.device)
        self.supervised_scales = set(s.supervised_scales)
        self.disparity_scales = set(s.disparity_scales)

    def param_groups(self):
        if self.posenet is None:
            return []
        return [("pose", self.posenet, self.cfg.lr_pose)]

    def warm_start(self, init_checkpoint):
        """The pose network starts from ``selfsup.init_pose``, else from ``train.init_from``
        (whole model, or with ``posenet`` in ``train.init_parts``), else afresh."""
        if self.posenet is None:
            return
        parts = self.init_parts
        if self.cfg.init_pose:
            ck, explicit = load_checkpoint(self.cfg.init_pose), True
        elif init_checkpoint is not None and (parts is None or "posenet" in parts):
            ck, explicit = init_checkpoint, parts is not None
        else:
            return
        if not ck.get("posenet"):
            if explicit:
                raise CheckpointError(f"{ck['path']} holds no pose network ('posenet'); it was not a self-supervised depth run")
            return  # a whole-model init without a pose network: the pose network starts afresh
        self.posenet.load_state_dict(ck["posenet"])

    def losses(self, ctx: StepContext):
        """Supervised tasks at ``selfsup.supervised_scales`` + the Monodepth2 objective for disparity."""
        out, batch = ctx.outputs, ctx.batch
        sup = {t: {k: v for k, v in out[t].items() if k in self.supervised_scales} for t in self.tasks if t != "disparity"}
        losses = task_losses(sup, {t: ctx.labels[t] for t in sup}, protocol=self.protocol) if sup else {}
        frames = {k: v.to(self.device) for k, v in batch["frames"].items()}
        if self.posenet is not None:
            poses = {k: self.posenet.relative_pose(ctx.image, frames[k], source_is_previous=k < 0) for k in frames}
        elif "poses" in batch:  # selfsup.pose_source=dataset: the known camera motion
            poses = {k: batch["poses"][k].to(self.device) for k in frames}
        else:
            raise ValueError(f"selfsup.pose_source=dataset, but {self.dataset} gives no camera poses "
                             f"(procedural sequences do); use selfsup.pose_source=network")
        disp = {k: v.float() for k, v in out["disparity"].items() if k in self.disparity_scales}
        losses["disparity"], _ = self_supervised_depth_loss(disp, batch["image"].to(self.device), frames, poses,
                                                            batch["K"].to(self.device), float(self.cfg.smoothness))
        return losses

    def state_dict(self):
        return self.posenet.state_dict() if self.posenet is not None else None

    def load_state_dict(self, state, path):
        if self.posenet is not None:
            self.posenet.load_state_dict(state)
