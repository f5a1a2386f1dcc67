"""The run configuration: every key, its default and meaning.

Configs are YAML files composed with ``_base_: [relative/path.yaml, ...]`` (merged in order,
then the file itself), overridden on the command line with dotted ``key=value``. An unknown
key is an error that lists the valid ones. ``model.options``, ``data.options`` and
``loss.options`` are free-form (their keys are the options of the model / dataset / weighting
they go to). ``SPEC`` gives every key's type and range, checked when a config is loaded.
"""

import timm

from ..data import list_datasets
from ..losses import list_weightings
from ..models import list_models
from ..tasks import list_protocols, list_tasks, parse_task_set
from ..tasks.depth import DEPTH_MAPS
from ..tasks.normals import NORMALS_MAPS
from ..uda.alignment import REDUCTIONS
from .types import AnyOf, Bool, Int, Invalid, ListOf, Mapping, Maybe, Number, Size, Text

DEFAULTS = {
    "experiment": "default",       # run name; runs/<experiment>/<run_name>
    "run_name": None,              # default: seed<seed>
    "output_dir": "runs",
    "seed": 0,
    "tasks": "SD",                 # task set: SD, SDN, SDNE, or one task for STL
    "protocol": "standard",        # standard | paper: the authors' released evaluation, targets and losses (docs/fidelity.md)
    "model": {
        "name": "densemtl",        # stl | mtl | padnet | padnet3ways | densemtl
        "backbone": "resnet101",
        "pretrained": False,       # false | true (timm's default weights) | a timm tag (resnet101.tv_in1k) | path to .pth/.safetensors
        "options": {},             # method options, e.g. {mteb_scales: [1], fusion: add}
    },
    "data": {
        "dataset": "nyud",
        "root": None,
        "size": None,              # [H, W]; default: the dataset's
        "batch_size": 2,
        "val_batch_size": 2,
        "num_workers": 2,
        "augment": True,           # horizontal flip (train split)
        "scale_crop": None,        # e.g. [1.0, 1.5]
        "crop": None,              # [H, W] random crop after the resize to size (train split), e.g. [512, 1024]
        "train_split": "train",
        "val_split": "val",
        "limit_train": None,
        "limit_val": None,
        "options": {},             # extra dataset options (edge_aware_normals, label_set: uda8, ...)
    },
    "loss": {
        "weighting": "fixed",      # fixed | uncertainty | dwa | gradnorm
        "options": {},             # e.g. {weights: {semseg: 50, depth: 1}} for fixed
    },
    "optim": {
        "name": "adam",            # adam | sgd
        "lr_backbone": 2.0e-4,
        "lr_decoder": 3.0e-4,      # decoders, heads, exchange blocks, learnable loss weights
        "betas": [0.9, 0.98],
        "momentum": 0.9,
        "weight_decay": 0.0,
        "clip_grad_norm": 10.0,    # null to disable
        "fused": "auto",           # auto | true | false: the optimiser's fused kernel (auto: on CUDA, off on CPU)
    },
    "schedule": {
        "iterations": 40000,
        "milestones": [30000],     # learning rate x gamma at these iterations
        "gamma": 0.1,
    },
    "train": {
        "log_every": 50,
        "eval_every": 2000,
        "checkpoint_every": 1000,
        "image_every": 2000,       # prediction images to TensorBoard
        "amp": "auto",             # auto | null | bf16 | fp16; auto: bf16 where the hardware computes bf16 natively, else fp32 (null)
        "channels_last": "auto",   # auto | true | false; auto: on with bf16/fp16 autocast (docs/performance.md)
        "compile": "auto",         # auto | true | false: torch.compile (inductor); auto: on for CUDA with Triton, off on CPU
        "activation_checkpointing": False,  # recompute decoder stages and exchange blocks in backward (less memory, slower; 3-ways models)
        "deterministic": False,    # torch.use_deterministic_algorithms
        "sync_bn": False,
        "freeze_bn": False,        # keep BatchNorm in eval mode (running statistics), e.g. for tiny batches
        "select_metric": "auto",   # auto: the headline metric (one task) or mean relative gain; or task/metric
        "select_scale": None,      # output scale whose metrics select best.pt (null: the evaluation scale, 0; the authors': 1)
        "progress": True,
        "init_from": None,         # checkpoint to initialise weights from (not a resume)
        "init_parts": None,        # null: the whole model (same architecture); or parts, e.g. [encoder, decoders, posenet]
        "init_decoder_source": None,  # null, or a task: the decoders in init_parts come from that task's decoder of
                                      # init_from (ASPP and conv blocks for every task, heads for that task only),
                                      # e.g. disparity: Hoyer et al.'s depth decoder in every decoder (Table 5)
        "init_depth_bias": True,   # depth heads start at the median depth of the first training images
    },
    "selfsup": {                   # self-supervised depth from video (task 'disparity', paper section 4.4)
        "enabled": False,
        "pose_source": "network",  # network: learned pose network; dataset: known camera motion (procedural sequences)
        "pose_backbone": "resnet18",
        "pose_pretrained": False,  # false | true (timm) | local RGB weights file (conv1 duplicated and halved)
        "smoothness": 1.0e-3,
        "disparity_scales": [0, 1, 2, 3],
        "supervised_scales": [0, 2],  # scales of the other (supervised) tasks' losses
        "lr_pose": None,            # learning rate of the pose network (null: optim.lr_decoder)
        "init_pose": None,          # densemtl checkpoint with a 'posenet' (default: train.init_from's, if it has one)
    },
    "uda": {                       # multi-task unsupervised domain adaptation (paper section 4.5)
        "target": {                # unlabelled target domain; its val split is what is evaluated
            "dataset": None,       # null: no target (plain supervised training)
            "root": None,
            "size": None,
            "crop": None,
            "augment": True,
            "options": {},         # e.g. {label_set: uda8}
            "train_split": "train",
            "val_split": "val",
            "limit_train": None,
            "limit_val": None,
        },
        "adversarial": False,      # false: source-only (trained on the source, evaluated on the target)
        "weight": 0.005,           # adversarial loss weight of the model
        "scales": None,            # output scales to align (null: the model's supervised scales)
        "lr": 1.0e-4,              # discriminators: Adam, polynomial decay
        "betas": [0.9, 0.99],
        "power": 0.9,
        "depth_ref": 10.0,         # metres mapped to 0.5 in the depth discriminator's input (depth_map: ratio)
        "reduction": "sum",        # sum | mean of the (task, scale) pairs' adversarial losses (released code: mean)
        "depth_map": "ratio",      # ratio: z / (z + z_ref), label-free; minmax: relu(z) min-max normalised by the
                                   # source batch's label codes (released code); see docs/uda.md
        "normals_map": "shifted",  # shifted: unit normals mapped to [0, 1]; unit: the unit normals (released code)
        "flip": False,             # discriminators mirror their input with p = 0.5 at each call (released code)
    },
    "eval": {
        "all_scales": True,        # also evaluate every other supervised output scale (metrics.jsonl keys s<k>/task/metric)
        "edge_boundary": False,    # ODS/OIS F during training evaluation (slow); always on in `densemtl eval`
        "num_thresholds": 25,
        "depth_median_scaling": False,  # scale each depth prediction by median(GT) / median(prediction) before the
                                        # metrics (the released UDA evaluation, Table 6); the disparity task always does
    },
}

FREE_FORM = ("model.options", "data.options", "loss.options", "uda.target.options")


def _models():
    return list_models()


def _tasks():
    return list_tasks()


def _datasets():
    return list_datasets()


def _weightings():
    return list_weightings()


def _protocols():
    return list_protocols()


def _backbones(value: str) -> bool:
    return timm.is_model(value)


class Backbone(Text):
    """A timm model name."""

    def __init__(self):
        super().__init__(expected="a timm model name (see timm.list_models()), e.g. resnet101")

    def __call__(self, value):
        value = super().__call__(value)
        if not _backbones(value):
            raise Invalid("unknown to timm")
        return value


class Tasks(Text):
    """A task set: letters (``SD``), names (``semseg,depth``) or a list of names."""

    def __init__(self):
        super().__init__(expected="a task set, e.g. SD, SDN or [semseg, depth]")

    def __call__(self, value):
        if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise Invalid()
        try:
            parse_task_set(value)
        except (ValueError, KeyError) as e:
            raise Invalid(str(e.args[0] if e.args else e)) from None
        return value


SCALES = Int(0, 4)  # output scales of the models: 0 (full resolution) .. 4
BETAS = ListOf(Number(0, 1, hi_open=True), size=2)
PATH = Text(expected="a path")
WEIGHTS = AnyOf(Bool(), PATH, expected="true, false or a weights file path")
MODEL_WEIGHTS = AnyOf(Bool(), PATH, expected="true, false, a timm weights tag (e.g. resnet101.tv_in1k) or a weights file path")
SIZE = Size(16)  # network input sides are multiples of the models' size divisor (16)
AUTO_SWITCH = AnyOf(Bool(), Text(("auto",)), expected="auto, true or false")  # auto: chosen from the hardware (engine/fastpath.py)

SPEC = {
    "experiment": Text(numbers=True),
    "run_name": Maybe(Text(numbers=True)),
    "output_dir": PATH,
    "seed": Int(0, 2**32 - 1),
    "tasks": Tasks(),
    "protocol": Text(_protocols),
    "model.name": Text(_models),
    "model.backbone": Backbone(),
    "model.pretrained": MODEL_WEIGHTS,
    "model.options": Mapping(),
    "data.dataset": Text(_datasets),
    "data.root": Maybe(PATH),
    "data.size": Maybe(SIZE),
    "data.batch_size": Int(1),
    "data.val_batch_size": Int(1),
    "data.num_workers": Int(0),
    "data.augment": Bool(),
    "data.scale_crop": Maybe(ListOf(Number(0, lo_open=True), size=2)),
    "data.crop": Maybe(SIZE),
    "data.train_split": Text(),
    "data.val_split": Text(),
    "data.limit_train": Maybe(Int(1)),
    "data.limit_val": Maybe(Int(1)),
    "data.options": Mapping(),
    "loss.weighting": Text(_weightings),
    "loss.options": Mapping(),
    "optim.name": Text(("adam", "sgd")),
    "optim.lr_backbone": Number(0),
    "optim.lr_decoder": Number(0),
    "optim.betas": BETAS,
    "optim.momentum": Number(0, 1, hi_open=True),
    "optim.weight_decay": Number(0),
    "optim.clip_grad_norm": Maybe(Number(0)),
    "optim.fused": AUTO_SWITCH,
    "schedule.iterations": Int(1),
    "schedule.milestones": ListOf(Int(1), distinct=True),
    "schedule.gamma": Number(0, 1, lo_open=True),
    "train.log_every": Int(0),
    "train.eval_every": Int(0),
    "train.checkpoint_every": Int(0),
    "train.image_every": Int(0),
    "train.amp": Maybe(Text(("auto", "bf16", "fp16"))),
    "train.channels_last": AUTO_SWITCH,
    "train.compile": AUTO_SWITCH,
    "train.activation_checkpointing": Bool(),
    "train.deterministic": Bool(),
    "train.sync_bn": Bool(),
    "train.freeze_bn": Bool(),
    "train.select_metric": Text(expected="auto or task/metric, e.g. semseg/mIoU"),
    "train.select_scale": Maybe(SCALES),
    "train.progress": Bool(),
    "train.init_from": Maybe(PATH),
    "train.init_parts": Maybe(ListOf(Text(), min_size=1)),
    "train.init_decoder_source": Maybe(Text(_tasks)),
    "train.init_depth_bias": Bool(),
    "selfsup.enabled": Bool(),
    "selfsup.pose_source": Text(("network", "dataset")),
    "selfsup.pose_backbone": Backbone(),
    "selfsup.pose_pretrained": WEIGHTS,
    "selfsup.smoothness": Number(0),
    "selfsup.disparity_scales": ListOf(SCALES, min_size=1, distinct=True),
    "selfsup.supervised_scales": ListOf(SCALES, distinct=True),
    "selfsup.lr_pose": Maybe(Number(0)),
    "selfsup.init_pose": Maybe(PATH),
    "uda.target.dataset": Maybe(Text(_datasets)),
    "uda.target.root": Maybe(PATH),
    "uda.target.size": Maybe(SIZE),
    "uda.target.crop": Maybe(SIZE),
    "uda.target.augment": Bool(),
    "uda.target.options": Mapping(),
    "uda.target.train_split": Text(),
    "uda.target.val_split": Text(),
    "uda.target.limit_train": Maybe(Int(1)),
    "uda.target.limit_val": Maybe(Int(1)),
    "uda.adversarial": Bool(),
    "uda.weight": Number(0),
    "uda.scales": Maybe(ListOf(SCALES, min_size=1, distinct=True)),
    "uda.lr": Number(0),
    "uda.betas": BETAS,
    "uda.power": Number(0),
    "uda.depth_ref": Number(0, lo_open=True),
    "uda.reduction": Text(REDUCTIONS),
    "uda.depth_map": Text(DEPTH_MAPS),
    "uda.normals_map": Text(NORMALS_MAPS),
    "uda.flip": Bool(),
    "eval.all_scales": Bool(),
    "eval.edge_boundary": Bool(),
    "eval.num_thresholds": Int(1),
    "eval.depth_median_scaling": Bool(),
}
