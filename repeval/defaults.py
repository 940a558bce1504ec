"""Defaults shared by several layers, each in one place. Configs, models, the CLI and notebooks read
them from here (or from the config dataclass that holds them), never repeat them."""

HEAD_HIDDEN = 64  # hidden width of every two-layer head (task, dummy, universality); the authors' value
ASPP_WIDTH = 256  # channels of the DeepLabv3 head's ASPP (the reference network's)
