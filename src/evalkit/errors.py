"""The one exception type that reaches users as a single line (see DESIGN.md, Errors)."""


class EvalkitError(Exception):
    """Bad input a user can fix: the message names the thing and what to do.

    The CLI prints it as one line and exits non-zero, without a traceback unless
    ``--debug`` is given. Anything else that escapes is a bug and keeps its traceback.
    """


def one_line(exc: BaseException) -> str:
    """The user-facing line of ``exc``, also when it was re-raised from a DataLoader worker.

    PyTorch re-raises worker exceptions with the worker's whole traceback as the
    message; the last line holds the original ``EvalkitError: message``.
    """
    text = str(exc).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1]
        prefix = "evalkit.errors.EvalkitError:"
        if text.startswith(prefix):
            text = text[len(prefix):]
    return " ".join(text.split())
