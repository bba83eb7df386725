"""Errors that end a ``knute`` command with one clear line and exit status 2."""

EXIT_CONFIG = 78    # sysexits.h EX_CONFIG: `knute gateway run` could not start on its config


class KnuteError(Exception):
    """A failure the user can act on; its message is printed as one line on stderr."""

    exit_status = 2


class ConfigError(KnuteError):
    """``knute gateway run`` cannot start on this configuration: restarting will not help.

    The command exits with ``EXIT_CONFIG`` so that systemd's
    ``RestartPreventExitStatus=`` stops the restart loop (contrib/knute-gateway.service).
    """

    exit_status = EXIT_CONFIG
