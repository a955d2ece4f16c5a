"""The plan, sweep and report commands."""


def add_sweep_commands(commands, common) -> None:
    pass


def dispatch(command, args) -> int:
    raise NotImplementedError(command)
