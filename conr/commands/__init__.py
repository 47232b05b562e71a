"""One module per sub-command; each exposes ``register(subparsers)`` which adds its
parser and sets ``func``. Add a command by adding a module and a name to COMMANDS."""

COMMANDS = ["demo", "train", "methods", "cluster", "predict", "plot", "eval", "sweep", "purity"]
