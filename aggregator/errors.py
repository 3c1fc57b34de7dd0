"""The one exception tree of the aggregator; every error carries its context.

    AggregatorError                 base: catch this to catch ours
    ├── ConfigError                 a settings file or value is wrong (.file, .key, .line,
    │   │                           or .variable for an environment override)
    │   └── ConfigErrors            several such mistakes found in one pass (.problems)
    ├── SourceError                 one source failed (.source, .url, .code)
    │   ├── FetchError              the HTTP exchange failed or was refused
    │   └── ParseError              the bytes are not a usable feed
    ├── StoreError                  the database refused or is unreachable
    ├── EvalError                   an evaluation file is malformed (.file, .line)
    └── PublishError                a document could not be written (.path)

Messages say what happened and what to do. `code` is a short stable key
("http_404", "timeout", "not_a_feed"...) kept on the source's row so that
`sources list` and metrics can group failures.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Base class of every error the aggregator raises on purpose."""


class ConfigError(AggregatorError):
    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        variable: str | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.line = line
        self.variable = variable  # "AGGREGATOR_SERVER__PORT=x" when the value came from there
        self.reason = message
        origin = variable or (f"{file}:{line}" if file and line is not None else file)
        super().__init__(": ".join([part for part in (origin, key) if part] + [message]))

    @property
    def problems(self) -> tuple[ConfigError, ...]:
        """Each mistake on its own: this one, or every one a ConfigErrors gathered."""
        return (self,)


class ConfigErrors(ConfigError):
    """Every mistake of one settings file at once; file, key and line are the first's."""

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0]
        super().__init__(
            first.reason, file=first.file, key=first.key, line=first.line, variable=first.variable
        )
        self._problems = tuple(problems)
        # One line, for logs; the CLI prints `problems` one per line.
        self.args = ("; ".join(str(problem) for problem in problems),)

    @property
    def problems(self) -> tuple[ConfigError, ...]:
        return self._problems

    @staticmethod
    def of(problems: list[ConfigError]) -> ConfigError:
        """The one error, or all of them together."""
        return problems[0] if len(problems) == 1 else ConfigErrors(problems)


class SourceError(AggregatorError):
    code = "error"

    def __init__(
        self, message: str, *, url: str, source: str | None = None, code: str | None = None
    ) -> None:
        self.url = url
        self.source = source
        if code is not None:
            self.code = code
        self.reason = message
        who = f"source {source!r} ({url})" if source else url
        super().__init__(f"{who}: {message}")


class FetchError(SourceError):
    code = "fetch_error"


class ParseError(SourceError):
    code = "parse_error"


class StoreError(AggregatorError):
    pass


class EvalError(AggregatorError):
    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {message}")


class ModelError(AggregatorError):
    """A shipped model file (aggregator/cluster/models/) is missing or broken; the
    message names the file and the command that rebuilds it."""


class PublishError(AggregatorError):
    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")
