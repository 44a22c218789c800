"""tether: RLHF end to end, under a KL leash.

The public surface is the CLI (`tether --help`) and the recipes in
`tether.recipes`; the maths lives in `tether.algos` as pure torch functions.
"""

__version__ = "0.1.0"
