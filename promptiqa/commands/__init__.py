"""The command modules that join several parts of the package (the registry is promptiqa/cli.py). A command whose
code drives one layer lives beside it instead (data/check.py, data/prepare.py, data/isp.py, app/command.py,
demo/command.py); each module has ``add_arguments(parser)`` and ``run(args) -> exit code``."""
