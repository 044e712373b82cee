"""Every error a caller can cause, each with a message that says what is wrong and what to do.

Interfaces map these to HTTP statuses and CLI exit codes in one place each, from the class
attributes below; nothing else in the system decides how an error is shown.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LLMasOSError(Exception):
    """Base of every error LLMasOS raises on purpose."""

    #: OpenAI-style error type, used by the HTTP layer.
    type: str = "internal_error"
    #: HTTP status this error maps to.
    http_status: int = 500
    #: Set once the error has its audit row, so the interfaces' error mappers do not write another.
    audited: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequestError(LLMasOSError):
    """The request itself is malformed: a bad value, an empty prompt, a wrong combination."""

    type = "invalid_request_error"
    http_status = 400


class InvalidSamplingParamsError(InvalidRequestError):
    """A sampling parameter is out of range (temperature, top_p, top_k, max_tokens, ...)."""


class EngineFaultError(LLMasOSError):
    """The engine failed while preparing, running or sampling one request; that request alone ended.

    Not the caller's mistake as far as the server can tell (their values passed every check), so a 500;
    the other requests on the model go on."""

    type = "engine_error"
    http_status = 500


class ContextWindowExceededError(LLMasOSError):
    """The prompt does not fit the model's context window."""

    type = "context_length_exceeded"
    http_status = 413


class ModelNotFoundError(LLMasOSError):
    """No model of that name in the library."""

    type = "model_not_found"
    http_status = 404


class ModelFormatError(LLMasOSError):
    """A model file is truncated, corrupt, or not the format it claims to be."""

    type = "model_format_error"
    http_status = 400


class UnsupportedModelError(ModelFormatError):
    """A well-formed model whose architecture, tokenizer or quantization LLMasOS cannot run."""


class ModelSourceError(LLMasOSError):
    """A pull source cannot be read: missing path, unknown package, no model file inside."""

    type = "model_source_error"
    http_status = 400


class KVCacheCapacityError(LLMasOSError):
    """A request needs more KV-cache memory than the whole pool holds, so it could never run."""

    type = "kv_cache_capacity_exceeded"
    http_status = 413


class RequestNotFoundError(LLMasOSError):
    """No live request with that id (already finished, aborted, or never added)."""

    type = "not_found_error"
    http_status = 404


class AppNotFoundError(LLMasOSError):
    """No app of that name."""

    type = "app_not_found"
    http_status = 404


class AppExistsError(LLMasOSError):
    """An app of that name already exists."""

    type = "app_exists"
    http_status = 409


class PermissionDeniedError(LLMasOSError):
    """The calling app lacks the capability for what it asked."""

    type = "permission_denied"
    http_status = 403


class QuotaExceededError(LLMasOSError):
    """A quota or a queue bound refuses the call now; `retry_after` says when to try again."""

    type = "rate_limit_exceeded"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailableError(LLMasOSError):
    """The model cannot be loaded now (it does not fit the memory budget, or loading failed)."""

    type = "model_unavailable"
    http_status = 503


class ProcessNotFoundError(LLMasOSError):
    """No process with that id visible to the caller."""

    type = "not_found_error"
    http_status = 404


class ProcessStateError(LLMasOSError):
    """A process cannot make that move from the state it is in (e.g. cancelling a finished process)."""

    type = "invalid_state_error"
    http_status = 409


class AuthenticationError(LLMasOSError):
    """No API key, or one that names no app."""

    type = "authentication_error"
    http_status = 401


class ServiceNotFoundError(LLMasOSError):
    """No system service of that name."""

    type = "service_not_found"
    http_status = 404


class InvalidSchemaError(InvalidRequestError):
    """A JSON schema is malformed, or uses a part of JSON Schema that constrained decoding cannot use."""


def error_from_wire(type_: str | None, status: int, message: str, retry_after: float = 1.0) -> LLMasOSError:
    """The error a server sent (its `type` and HTTP status), as the class that raised it there.

    Clients of a remote server then catch the same classes as in-process callers."""
    queue: list[type[LLMasOSError]] = [LLMasOSError]
    by_status: type[LLMasOSError] | None = None
    while queue:
        cls = queue.pop(0)
        if cls.type == type_ and cls.http_status == status:
            break
        if by_status is None and cls.http_status == status and cls is not LLMasOSError:
            by_status = cls
        queue.extend(cls.__subclasses__())
    else:
        cls = by_status or LLMasOSError
    if cls is QuotaExceededError:
        return QuotaExceededError(message, retry_after)
    try:
        err = cls(message)
    except TypeError:  # a class that needs more than a message: keep its wire identity on the base
        err, cls = LLMasOSError(message), LLMasOSError
    if cls is LLMasOSError:
        err.type, err.http_status = type_ or err.type, status
    return err


class ServerUnavailableError(LLMasOSError):
    """No LLMasOS server answers where the client looked for one."""

    type = "server_unavailable"
    http_status = 503


class ConfigurationError(LLMasOSError):
    """The operator's settings (config.toml, an LLMASOS_* variable, a flag) hold an unknown key or a bad
    value; the message names the key, where it was set and what is allowed."""

    type = "configuration_error"
    http_status = 400


class AddressInUseError(LLMasOSError):
    """`llmasos serve` cannot listen where it was asked to: another program holds the port."""

    type = "address_in_use"
    http_status = 409


class ToolNotFoundError(LLMasOSError):
    """No tool of that name in the registry."""

    type = "tool_not_found"
    http_status = 404


class ToolUnavailableError(LLMasOSError):
    """A tool's model or program cannot run here (a missing package or system program)."""

    type = "tool_unavailable"
    http_status = 503


class CallCancelledError(LLMasOSError):
    """A program call was cancelled while it ran: its client went away, or one of its processes was
    cancelled through `/os/tasks`. Nothing of it is left running."""

    type = "cancelled"
    http_status = 409


class ClientDisconnectedError(CallCancelledError):
    """The client closed its connection before its request was admitted, or while it was: the request
    is dropped before it costs the engine a prefill (nobody would read the answer)."""

    type = "client_disconnected"


class ReaderTimeoutError(CallCancelledError):
    """A stream's reader took none of its output for the reader timeout while the output waiting for
    it was at its bound: the process was ended and its KV freed (a stream must be read to go on)."""

    type = "reader_timeout"


class PluginError(LLMasOSError):
    """A plugin does not hold to the plugin contract (e.g. registers a name already taken)."""

    type = "plugin_error"
    http_status = 500


class AuditIntegrityError(LLMasOSError):
    """The audit log cannot be written as it must be (its key is missing or unreadable): the server
    refuses to work unaudited rather than carry on with a log it cannot vouch for."""

    type = "audit_unavailable"
    http_status = 503


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`did you mean 'list'? ` naming the known names closest to `name` (case ignored), or "" if none is
    close: the start of a not-found message's hint."""
    by_folded = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_folded), n=3, cutoff=0.6)
    if not close:
        return ""
    return f"did you mean {' or '.join(repr(by_folded[c]) for c in close)}? "


class WorkflowValidationError(InvalidRequestError):
    """A workflow spec is refused at submission: `path` says where (`steps.fetch.input.text`)."""

    type = "invalid_workflow"

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class WorkflowNotFoundError(LLMasOSError):
    """No workflow or run of that name or id visible to the caller."""

    type = "workflow_not_found"
    http_status = 404


class WorkflowStateError(LLMasOSError):
    """A run cannot make that move from the state it is in (approving a step that does not wait)."""

    type = "invalid_workflow_state"
    http_status = 409


class DataNotFoundError(LLMasOSError):
    """No file, vector store, batch or key of that id among the calling app's own data."""

    type = "not_found_error"
    http_status = 404


class StorageQuotaError(LLMasOSError):
    """Storing this would take the app past its data quota (bytes or items)."""

    type = "storage_quota_exceeded"
    http_status = 413


class UnsupportedFileError(InvalidRequestError):
    """A file that cannot be read as the format it claims (a PDF that is not one, empty, not text)."""


class MasterKeyError(LLMasOSError):
    """The master key is missing, malformed, or not the one the data keys were wrapped with."""

    type = "master_key_error"
    http_status = 503


class DecryptionError(LLMasOSError):
    """Encrypted bytes failed authentication: flipped, truncated, reordered, or under another key.

    Not the client's mistake, and not a bug to hide behind a 500: the stored data (a model file's
    chunk, an app's value) cannot be served until it is restored or written again, which the message
    names. 503, as a model that cannot be loaded now and a missing master key are."""

    type = "decryption_error"
    http_status = 503


class PrivacyBudgetError(LLMasOSError):
    """An analyst asked for private statistics past the privacy (epsilon) budget of their key."""

    type = "privacy_budget_exhausted"
    http_status = 403


class PersonalDataBlockedError(InvalidRequestError):
    """The app's privacy policy refuses personal data in this direction, and the input had some.

    The message names the entity types found, never their values."""

    type = "personal_data_blocked"

    def __init__(self, message: str, entity_types: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.entity_types = tuple(entity_types)


class NodeRefusedError(LLMasOSError):
    """A node asked to join the cluster without proving it knows the cluster secret."""

    type = "node_refused"
    http_status = 403


class ClusterUnavailableError(ModelUnavailableError):
    """No node of the cluster can do this now (no node has the capability, or none is left alive)."""

    type = "cluster_unavailable"
