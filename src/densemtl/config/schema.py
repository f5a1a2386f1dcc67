"""The run configuration: every key, its default and meaning.

Configs are YAML files composed with ``_base_: [relative/path.yaml, ...]`` (merged in order,
then the file itself), overridden on the command line with dotted ``key=value``. An unknown
key is an error that lists the valid ones. ``model.options``, ``data.options`` and
``loss.options`` are free-form (validated by the model / dataset / weighting they go to).
"""

DEFAULTS = {
    "experiment": "default",       # run name; runs/<experiment>/<run_name>
    "run_name": None,              # default: seed<seed>
    "output_dir": "runs",
    "seed": 0,
    "tasks": "SD",                 # task set: SD, SDN, SDNE, or one task for STL
    "model": {
        "name": "densemtl",        # stl | mtl | padnet | padnet3ways | densemtl
        "backbone": "resnet101",
        "pretrained": False,       # false | true (timm weights) | path to .pth/.safetensors
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
        "amp": None,               # null | bf16 | fp16
        "channels_last": False,
        "deterministic": False,    # torch.use_deterministic_algorithms
        "sync_bn": False,
        "freeze_bn": False,        # keep BatchNorm in eval mode (running statistics), e.g. for tiny batches
        "select_metric": "auto",   # auto: the headline metric (one task) or mean relative gain; or task/metric
        "progress": True,
        "init_from": None,         # checkpoint to initialise weights from (not a resume)
        "init_parts": None,        # null: the whole model (same architecture); or parts, e.g. [encoder, decoders, posenet]
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
        "depth_ref": 10.0,         # metres mapped to 0.5 in the depth discriminator's input
    },
    "eval": {
        "edge_boundary": False,    # ODS/OIS F during training evaluation (slow); always on in `densemtl eval`
        "num_thresholds": 25,
    },
}

FREE_FORM = ("model.options", "data.options", "loss.options", "uda.target.options")
