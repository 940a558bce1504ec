"""The top layer (`repeval.app`): the command line, the demo and its report. It turns options into
typed configs and calls `repeval.training` and `repeval.probes`; nothing below imports it."""
