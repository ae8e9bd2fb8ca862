"""The run context: what workflow code uses to take durable steps, and the replay behind it.

Every operation takes its step number when it is *called*, not when it completes, so
`asyncio.gather(ctx.step(a), ctx.step(b), ctx.run_child(w, x))` numbers its steps in argument
order, live and on replay alike. (A parallel branch that itself takes several steps one after
another gets numbers in the order its earlier steps finish; make such a branch a child run.)

A step found in the journal returns its recorded outcome without running. A step that is not
there runs, and its outcome is committed before the code that called it sees it. A wait that
cannot be satisfied yet (a timer, a signal, a child) raises `Suspend`, which unloads the run: it is
replayed from the top when it wakes.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import inspect
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints, overload

from pydantic_core import to_jsonable_python

from corral.engine import payloads
from corral.engine.crashpoints import crash_point
from corral.engine.retries import AttemptFailure, Attempts, RetryDecision, RetryRule, retries_in
from corral.engine.timeouts import TimedOut, within
from corral.errors import (
    ChildRunFailed,
    LeaseLost,
    NonDeterminismError,
    NotSerializable,
    RunCancelled,
    RunDeadlineExceeded,
    SignalTimeout,
    StepFailed,
    StepTimeout,
    UsageError,
)
from corral.store import NewRun, RunRecord, StepKind, StepRecord, StepWrite, Store
from corral.store.scripts import ScriptFactory

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.engine.workflows import Runnable, Workflow, WorkflowRegistry

T = TypeVar("T")

_CHILD_NAMESPACE = uuid.UUID("6f0c6b8e-2f4e-4a59-9d0e-3f1c2a7b9e11")

CANCEL_SIGNAL = "corral.cancel"
"""The signal that cancels a run with compensations to make: it runs them, then ends cancelled."""

Compensation = Callable[[Any], Any]
"""Undoes a step: called with the step's result, as a journaled step of its own."""


@dataclass(frozen=True, slots=True)
class _Registered:
    seq: int
    name: str
    undo: Compensation
    result: Any
    retry: RetryRule | None


class Suspend(BaseException):
    """Unloads a run until `wake_at` (None: until an event). A BaseException so that a workflow's
    `except Exception` cannot swallow it."""

    def __init__(self, wake_at: float | None) -> None:
        super().__init__(wake_at)
        self.wake_at = wake_at


class ReconciliationNeeded(BaseException):
    """An at-most-once step was in flight at a crash: the run must stop for a human."""

    def __init__(self, seq: int, name: str) -> None:
        super().__init__(seq, name)
        self.seq = seq
        self.name = name


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a running step knows about itself; `current_step()` returns it inside a step body."""

    run_id: str
    seq: int
    name: str
    idempotency_key: str
    redelivered: bool
    """True when an earlier attempt was dispatched and may have had its effect (a crash)."""
    lease_epoch: int
    """The claim of the run this attempt executes under: attempts by different workers (or by
    one worker after a takeover) have different epochs."""
    attempt: int = 1
    """Which attempt this is (retries of a step share its idempotency key)."""


_current_context: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "corral_run_context", default=None
)
_current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "corral_current_step", default=None
)


_step_scripts: contextvars.ContextVar[list[ScriptFactory[Any]] | None] = contextvars.ContextVar(
    "corral_step_scripts", default=None
)


def commit_with_step(script: ScriptFactory[Any]) -> None:
    """Run a transaction script in the same transaction that journals the current step's
    outcome (success or failure): the layers above use it to write a record of what the step
    decided (an audit entry) that commits exactly when the step's outcome does.

    Raises `UsageError` outside a step body.
    """
    scripts = _step_scripts.get()
    if scripts is None:
        raise UsageError("commit_with_step() is for step bodies: no step is running here")
    scripts.append(script)


def current_context() -> RunContext | None:
    """The run context of the workflow code calling this, or None outside a run."""
    return _current_context.get()


def current_step() -> StepInfo | None:
    """The step whose body is calling this (with its idempotency key), or None outside one."""
    return _current_step.get()


@lru_cache(maxsize=1024)
def _step_function(fn: Callable[..., Any]) -> tuple[Any, bool]:
    """(return annotation, is a coroutine function) of a step body, looked up once."""
    try:
        return_type = get_type_hints(fn).get("return")
    except Exception:  # unresolvable annotations: treat the result as plain JSON
        return_type = None
    return return_type, inspect.iscoroutinefunction(fn)


class RunContext:
    """Handed to a workflow as its first argument. Everything that is not pure computation goes
    through it, so that it is journaled and replays."""

    def __init__(
        self,
        *,
        run: RunRecord,
        journal: list[StepRecord],
        store: Store,
        clock: Clock,
        workflows: WorkflowRegistry,
        on_new_run: Callable[[], None] = lambda: None,
        deadline: float | None = None,
        cancel_requested: bool = False,
    ) -> None:
        self.run_id = run.run_id
        self.workflow = run.workflow
        self.tenant = run.tenant
        self._run = run
        self._epoch = run.lease_epoch
        self._journal = {record.seq: record for record in journal}
        self._last_recorded = max(self._journal, default=0)
        self._store = store
        self._clock = clock
        self._workflows = workflows
        self._on_new_run = on_new_run
        self._next_seq = 1
        self._suspending = False
        self._wake_times: list[float | None] = []
        self._writes: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lost: LeaseLost | None = None
        self.nondeterminism: NonDeterminismError | None = None
        """Set at the first mismatch with the journal; the run fails with it whatever the
        workflow's code does with the exception (an `except Exception` cannot hide it)."""
        self.random = random.Random(run.run_id)
        """Deterministic randomness: the same sequence every time the run replays."""
        self.deadline = deadline
        """When the run must have finished (its workflow's `timeout` after it was created)."""
        self.cancel_requested = cancel_requested
        """A cancel is waiting: the next step that is not in the journal raises `RunCancelled`."""
        self._retries = sum(retries_in(record.detail) for record in journal)
        self._compensations: list[_Registered] = []
        self._compensating = False

    # -- the public API ------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The run's store: layers above the engine keep their own tables in it (governance),
        changed with transaction scripts from inside steps."""
        return self._store

    @property
    def clock(self) -> Clock:
        """The engine's clock. Workflow code must use `await ctx.now()` (journaled); step bodies
        may read this one."""
        return self._clock

    @property
    def root_run_id(self) -> str:
        """The run at the top of this run's tree of child runs (this run, if it has no parent):
        the run whose trace this one's steps belong to."""
        return self._run.root_run_id or self.run_id

    @property
    def is_replaying(self) -> bool:
        """True while the code re-executes steps that the journal already holds."""
        return self._next_seq <= self._last_recorded

    @overload
    def step(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        name: str | None = None,
        at_most_once: bool = False,
        retry: RetryRule | None = None,
        timeout: float | None = None,
        compensate: Compensation | None = None,
        record: Any = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def step(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        name: str | None = None,
        at_most_once: bool = False,
        retry: RetryRule | None = None,
        timeout: float | None = None,
        compensate: Compensation | None = None,
        record: Any = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, T]: ...
    def step(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        name: str | None = None,
        at_most_once: bool = False,
        retry: RetryRule | None = None,
        timeout: float | None = None,
        compensate: Compensation | None = None,
        record: Any = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Any]:
        """Run `fn(*args, **kwargs)` as a journaled step and return its result.

        The body runs at least once (again after a crash before its result was committed), with
        the same idempotency key each time (`current_step().idempotency_key`). With
        `at_most_once=True` it runs at most once: a crash while it was in flight stops the run in
        `needs_reconciliation` instead of calling it again. A sync `fn` runs in a thread.

        Options (so a step function cannot take keyword arguments with these names):

        - `retry`: a `RetryRule` asked after each failed attempt; a retry is a durable timer and
          the next attempt has the same idempotency key. At-most-once steps are never retried.
        - `timeout`: seconds before an attempt is abandoned with `StepTimeout` (on the engine's
          clock). The run's deadline, if it has one, bounds every attempt as well.
        - `compensate`: called with the step's result, as a step of its own, if the run fails or
          is cancelled later; compensations run in the reverse order of their steps.
        - `record`: a JSON value journaled with the step (its `detail["input"]`) saying what it
          was called with, for people and tools that read the journal (search, replay). It is
          never read back by the run.
        """
        return self.call_step(
            fn,
            args,
            kwargs,
            name=name,
            at_most_once=at_most_once,
            retry=retry,
            timeout=timeout,
            compensate=compensate,
            record=record,
        )

    def call_step(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str | None = None,
        at_most_once: bool = False,
        retry: RetryRule | None = None,
        timeout: float | None = None,
        compensate: Compensation | None = None,
        record: Any = None,
    ) -> Coroutine[Any, Any, Any]:
        """`step` with the body's arguments passed as they are (for decorators: a body may then
        take keyword arguments named like the options)."""
        seq = self._take_seq()
        step_name = name or getattr(fn, "__qualname__", None) or repr(fn)
        return self._run_step(
            seq, step_name, fn, args, kwargs, at_most_once, retry, timeout, compensate, record
        )

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """A durable timer: the run is unloaded and wakes after `seconds`, on any worker."""
        return self._sleep(self._take_seq(), seconds)

    def wait_for_signal(
        self, name: str, *, timeout: float | None = None, type_: Any = None
    ) -> Coroutine[Any, Any, Any]:
        """Wait for the next signal `name` sent to this run and return its data.

        Signals sent before the wait are kept and delivered in the order they were sent. Raises
        `SignalTimeout` after `timeout` seconds (None: wait for ever). `type_` validates the data.
        """
        return self._wait_for_signal(self._take_seq(), name, timeout, type_)

    def start_child(
        self, workflow: str | Runnable, input: Any = None
    ) -> Coroutine[Any, Any, ChildHandle]:
        """Start a child run and return a handle to await its result later."""
        return self._start_child(self._take_seq(), workflow, input)

    def run_child(self, workflow: str | Runnable, input: Any = None) -> Coroutine[Any, Any, Any]:
        """Start a child run and wait for its result (raises `ChildRunFailed` if it fails)."""
        start_seq = self._take_seq()
        result_seq = self._take_seq()

        async def run() -> Any:
            handle = await self._start_child(start_seq, workflow, input)
            return await handle._wait(result_seq)

        return run()

    def now(self) -> Coroutine[Any, Any, dt.datetime]:
        """The current time, journaled: a replay sees the time of the first execution."""
        return self._now(self._take_seq())

    def uuid4(self) -> uuid.UUID:
        """A random UUID that is the same every time the run replays."""
        return uuid.UUID(int=self.random.getrandbits(128), version=4)

    # -- steps ---------------------------------------------------------------------------------

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _check_open(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self.nondeterminism is not None:
            raise self.nondeterminism
        if self._suspending:
            # A sibling branch is unloading the run: start nothing new; replay will redo this.
            raise Suspend(None)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)

    def _recorded(self, seq: int, kind: StepKind, name: str) -> StepRecord | None:
        record = self._journal.get(seq)
        if record is not None and (record.kind != kind or record.name != name):
            self.nondeterminism = NonDeterminismError(
                f"run {self.run_id}, step {seq}: the journal recorded {record.kind} "
                f"{record.name!r} but the workflow code asked for {kind} {name!r}; the code "
                "changed since the run started (register a new workflow version for changes)",
                run_id=self.run_id,
                seq=seq,
                recorded=f"{record.kind} {record.name}",
                requested=f"{kind} {name}",
            )
            raise self.nondeterminism
        if (
            record is not None
            and record.status == "failed"
            and _DEADLINE_CODE in (record.error or "")
        ):
            cause = json.loads(record.error or "{}")
            if cause.get("code") == RunDeadlineExceeded.code:
                raise RunDeadlineExceeded(
                    cause.get("message", ""), **{k: cause.get(k) for k in _DEADLINE_IDS}
                )
        return record

    def _write(self, seq: int, kind: StepKind, name: str, **fields: Any) -> StepWrite:
        return StepWrite(
            run_id=self.run_id,
            epoch=self._epoch,
            seq=seq,
            kind=kind,
            name=name,
            at=self._clock.now(),
            **fields,
        )

    def _submit_intent(self, seq: int, name: str, at: float) -> None:
        write = StepWrite(
            run_id=self.run_id,
            epoch=self._epoch,
            seq=seq,
            kind="step",
            name=name,
            status="started",
            at=at,
        )
        self._submit_nowait(write)

    def _submit_nowait(self, write: StepWrite) -> None:
        """Queue a write for the next group commit without waiting for it."""
        future = self._store.submit_step(write)
        self._writes.add(future)
        future.add_done_callback(self._write_done)

    def _write_done(self, future: asyncio.Future[None]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and isinstance(future.exception(), LeaseLost):
            self._lost = future.exception()  # type: ignore[assignment]

    async def _run_step(
        self,
        seq: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        at_most_once: bool,
        retry: RetryRule | None = None,
        timeout: float | None = None,
        compensate: Compensation | None = None,
        recorded_input: Any = None,
    ) -> Any:
        self._check_open()
        return_type, is_async = _step_function(fn)
        record = self._recorded(seq, "step", name)
        if record is not None and record.status != "started":
            await asyncio.sleep(0)  # resume in the order a live run would
            if record.status == "failed":
                raise _step_failed(self.run_id, seq, name, record.error)
            value = payloads.load(record.result, return_type)
            self._register(seq, name, compensate, value, retry)
            return value
        await self._gate(seq, "step", name)
        attempts = Attempts.load(record.detail) if record is not None else Attempts()
        redelivered = record is not None
        if redelivered and record is not None and record.at_most_once:
            raise ReconciliationNeeded(seq, name)
        if attempts.retry_at is not None and self._clock.now() < attempts.retry_at:
            raise self._suspend(attempts.retry_at)  # woken early (a signal): wait the rest
        first_started_at = record.started_at if record is not None else self._clock.now()
        extra: dict[str, Any] = {}
        if recorded_input is not None:
            extra["input"] = to_jsonable_python(recorded_input)
        submit_intent: Callable[[], None] | None = None
        if not redelivered:
            crash_point("step.before_intent")
            if at_most_once:
                # Recovery of an at-most-once step depends on its intent: commit it first.
                await self._store.write_step(
                    self._write(seq, "step", name, status="started", at_most_once=True)
                )
            else:
                # An at-least-once step's intent only informs (recovery re-runs it either way).
                # It is queued when the body first suspends (real I/O): such a step is journaled
                # as "started"; a body that returns at once is journaled in one write.
                def submit_intent() -> None:
                    self._submit_intent(seq, name, first_started_at)

        info = StepInfo(
            self.run_id,
            seq,
            name,
            f"{self.run_id}:{seq}",
            redelivered,
            self._epoch,
            attempts.count + 1,
        )
        token = _current_step.set(info)
        scripts: list[ScriptFactory[Any]] = []
        scripts_token = _step_scripts.set(scripts)
        try:
            crash_point("step.after_dispatch")
            value = await self._attempt(
                seq, name, fn, args, kwargs, is_async, submit_intent, timeout
            )
        except (asyncio.CancelledError, Suspend, ReconciliationNeeded, LeaseLost):
            raise
        except Exception as exc:
            decision = self._decide_retry(retry, at_most_once, info, exc, first_started_at)
            if decision is not None:
                attempts = attempts.failed(
                    error=payloads.error_payload(exc), at=self._clock.now(), decision=decision
                )
            if decision is not None and attempts.retry_at is not None:
                self._retries += 1
                await self._store.write_step(
                    self._write(
                        seq,
                        "step",
                        name,
                        status="started",
                        retrying=True,
                        error=payloads.dump_error(exc),
                        detail=attempts.dump(extra),
                        scripts=tuple(scripts),
                    )
                )
                raise self._suspend(attempts.retry_at) from None
            detail = attempts.dump(extra) if attempts.count or extra else None
            error = await self._journal_failure(seq, name, at_most_once, exc, scripts, detail)
            raise _step_failed(self.run_id, seq, name, error) from exc
        finally:
            _current_step.reset(token)
            _step_scripts.reset(scripts_token)
        crash_point("step.after_effect")
        try:
            text = payloads.dump(
                value, return_type, where=f"step {seq} ({name}) of run {self.run_id}"
            )
        except NotSerializable as exc:
            # The body ran: journal the failure so a replay raises it again instead of re-running.
            await self._journal_failure(seq, name, at_most_once, exc, scripts)
            raise
        if compensate is not None:
            extra["compensate"] = True
        detail = attempts.dump(extra) if attempts.count or extra else None
        await self._store.write_step(
            self._write(
                seq,
                "step",
                name,
                status="succeeded",
                at_most_once=at_most_once,
                result=text,
                detail=detail,
                scripts=tuple(scripts),
            )
        )
        crash_point("step.after_commit")
        value = payloads.load(text, return_type)
        self._register(seq, name, compensate, value, retry)
        return value

    async def _attempt(
        self,
        seq: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        is_async: bool,
        submit_intent: Callable[[], None] | None,
        timeout: float | None,
    ) -> Any:
        """Run a step's body once, within its timeout and the run's deadline."""
        limit, by_deadline = timeout, False
        if self.deadline is not None and not self._compensating:
            left = self.deadline - self._clock.now()
            if limit is None or left < limit:
                limit, by_deadline = left, True
        if limit is None:
            return await self._body(fn, args, kwargs, is_async, submit_intent)
        try:
            return await within(
                self._clock, limit, self._body(fn, args, kwargs, is_async, submit_intent)
            )
        except TimedOut:
            if by_deadline:
                raise self._deadline_error(seq, name) from None
            raise StepTimeout(
                f"step {seq} ({name}) of run {self.run_id} did not finish within {timeout:g}s "
                "and was abandoned",
                run_id=self.run_id,
                seq=seq,
                step=name,
                timeout=timeout,
            ) from None

    @staticmethod
    async def _body(
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        is_async: bool,
        submit_intent: Callable[[], None] | None,
    ) -> Any:
        if is_async:
            body = fn(*args, **kwargs)
            if submit_intent is None:
                return await body
            return await _OnFirstSuspension(body, submit_intent)
        if submit_intent is not None:
            submit_intent()  # the thread is real concurrency: the body is in flight
        value = await asyncio.to_thread(fn, *args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value

    def _decide_retry(
        self,
        retry: RetryRule | None,
        at_most_once: bool,
        info: StepInfo,
        exc: Exception,
        first_started_at: float,
    ) -> RetryDecision | None:
        """Ask the step's retry rule about a failed attempt (never for at-most-once steps, a
        passed deadline or a value that cannot be journaled)."""
        if retry is None or at_most_once:
            return None
        if isinstance(exc, RunDeadlineExceeded | NotSerializable):
            return None
        return retry.decide(
            AttemptFailure(
                run_id=self.run_id,
                seq=info.seq,
                step=info.name,
                attempt=info.attempt,
                error=exc,
                first_started_at=first_started_at,
                now=self._clock.now(),
                run_retries=self._retries,
            )
        )

    async def _journal_failure(
        self,
        seq: int,
        name: str,
        at_most_once: bool,
        exc: BaseException,
        scripts: Sequence[ScriptFactory[Any]] = (),
        detail: str | None = None,
    ) -> str:
        """Journal a step as failed with `exc` (and the step's scripts); return the error."""
        error = payloads.dump_error(exc)
        await self._store.write_step(
            self._write(
                seq,
                "step",
                name,
                status="failed",
                at_most_once=at_most_once,
                error=error,
                detail=detail,
                scripts=tuple(scripts),
            )
        )
        return error

    # -- deadlines, cancels and compensations --------------------------------------------------

    async def _gate(self, seq: int, kind: StepKind, name: str) -> None:
        """Before anything is done live: a pending cancel stops the run; a passed deadline is
        journaled at this step and stops it."""
        if self._compensating:
            return
        if self.cancel_requested:
            raise RunCancelled(f"run {self.run_id} was cancelled", run_id=self.run_id)
        if self.deadline is not None and self._clock.now() >= self.deadline:
            error = self._deadline_error(seq, name)
            await self._store.write_step(
                self._write(seq, kind, name, status="failed", error=payloads.dump_error(error))
            )
            raise error

    def _deadline_error(self, seq: int, name: str) -> RunDeadlineExceeded:
        return RunDeadlineExceeded(
            f"run {self.run_id} passed its deadline at step {seq} ({name})",
            run_id=self.run_id,
            seq=seq,
            step=name,
            deadline=self.deadline,
        )

    def _register(
        self,
        seq: int,
        name: str,
        undo: Compensation | None,
        result: Any,
        retry: RetryRule | None,
    ) -> None:
        if undo is not None:
            self._compensations.append(_Registered(seq, name, undo, result, retry))

    @property
    def compensable(self) -> bool:
        """True when a step that succeeded registered a compensation."""
        return bool(self._compensations)

    async def compensate(self) -> list[str]:
        """Undo the run's compensable steps, newest first, each as a journaled step named
        `compensate:<step>` (retried by the step's own rule). A compensation that fails is
        journaled and the others still run; returns the failures, one line each."""
        self._compensating = True
        self._suspending = False  # a sibling that was waiting when the run failed is moot
        failures: list[str] = []
        for registered in sorted(self._compensations, key=lambda r: r.seq, reverse=True):
            try:
                await self._run_step(
                    self._take_seq(),
                    f"compensate:{registered.name}",
                    registered.undo,
                    (registered.result,),
                    {},
                    False,
                    registered.retry,
                )
            except StepFailed as failed:
                failures.append(failed.message)
        return failures

    async def _sleep(self, seq: int, seconds: float) -> None:
        self._check_open()
        name = "sleep"
        record = self._recorded(seq, "sleep", name)
        if record is not None and record.status == "succeeded":
            await asyncio.sleep(0)
            return
        await self._gate(seq, "sleep", name)
        if record is not None and record.detail is not None:
            wake_at = float(json.loads(record.detail)["wake_at"])
        else:
            wake_at = self._clock.now() + seconds
            detail = json.dumps({"seconds": seconds, "wake_at": wake_at})
            await self._store.write_step(
                self._write(seq, "sleep", name, status="started", detail=detail)
            )
        if self._clock.now() >= wake_at:
            await self._store.write_step(self._write(seq, "sleep", name, status="succeeded"))
            return
        raise self._suspend(wake_at)

    async def _wait_for_signal(self, seq: int, name: str, timeout: float | None, type_: Any) -> Any:
        self._check_open()
        record = self._recorded(seq, "signal", name)
        if record is not None and record.status != "started":
            await asyncio.sleep(0)
            if record.status == "failed":
                raise self._signal_timeout(seq, name, timeout)
            return payloads.load(record.result, type_)
        await self._gate(seq, "signal", name)
        if record is not None:
            deadline = json.loads(record.detail or "{}").get("deadline")
        else:
            deadline = None if timeout is None else self._clock.now() + timeout
            detail = json.dumps({"timeout": timeout, "deadline": deadline})
            await self._store.write_step(
                self._write(seq, "signal", name, status="started", detail=detail)
            )
        signal = await self._store.take_signal(
            self._write(seq, "signal", name, status="succeeded"), signal_name=name
        )
        if signal is not None:
            return payloads.load(signal.payload, type_)
        if deadline is not None and self._clock.now() >= deadline:
            error = self._signal_timeout(seq, name, timeout)
            await self._store.write_step(
                self._write(seq, "signal", name, status="failed", error=payloads.dump_error(error))
            )
            raise error
        raise self._suspend(deadline)

    def _signal_timeout(self, seq: int, name: str, timeout: float | None) -> SignalTimeout:
        return SignalTimeout(
            f"run {self.run_id}, step {seq}: no signal {name!r} within {timeout}s",
            run_id=self.run_id,
            seq=seq,
            signal=name,
        )

    async def _start_child(self, seq: int, workflow: str | Runnable, input: Any) -> ChildHandle:
        self._check_open()
        wf = self._workflows.resolve(workflow)
        record = self._recorded(seq, "child.start", wf.name)
        if record is not None and record.status == "succeeded":
            await asyncio.sleep(0)
            return ChildHandle(self, json.loads(record.result or "null"), wf)
        await self._gate(seq, "child.start", wf.name)
        # Derived from the parent's id and step: a re-executed start finds the same child.
        child_id = str(uuid.uuid5(_CHILD_NAMESPACE, f"{self.run_id}:{seq}"))
        child = NewRun(
            run_id=child_id,
            workflow=wf.name,
            workflow_version=wf.version,
            input=wf.encode_input(input),
            created_at=self._clock.now(),
            tenant=self.tenant,
            parent_run_id=self.run_id,
            parent_step_seq=seq,
            started_by=self._run.started_by,
        )
        write = self._write(
            seq, "child.start", wf.name, status="succeeded", result=json.dumps(child_id)
        )
        await self._store.start_child(write, child)
        self._on_new_run()
        return ChildHandle(self, child_id, wf)

    async def _wait_for_child(self, seq: int, handle: ChildHandle) -> Any:
        self._check_open()
        wf = handle.workflow
        record = self._recorded(seq, "child.result", wf.name)
        if record is not None and record.status != "started":
            await asyncio.sleep(0)
            if record.status == "failed":
                raise _child_failed(self.run_id, handle.run_id, record.error)
            return wf.decode_output(record.result)
        await self._gate(seq, "child.result", wf.name)
        child = await self._store.get_run(handle.run_id)
        if child is None or not child.finished:
            raise self._suspend(None)
        if child.status == "succeeded":
            await self._store.write_step(
                self._write(seq, "child.result", wf.name, status="succeeded", result=child.result)
            )
            return wf.decode_output(child.result)
        await self._store.write_step(
            self._write(seq, "child.result", wf.name, status="failed", error=child.error)
        )
        raise _child_failed(self.run_id, handle.run_id, child.error)

    async def _now(self, seq: int) -> dt.datetime:
        self._check_open()
        record = self._recorded(seq, "now", "now")
        if record is not None and record.status == "succeeded":
            await asyncio.sleep(0)
            stamp = float(json.loads(record.result or "0"))
        else:
            await self._gate(seq, "now", "now")
            stamp = self._clock.now()
            await self._store.write_step(
                self._write(seq, "now", "now", status="succeeded", result=json.dumps(stamp))
            )
        return dt.datetime.fromtimestamp(stamp, tz=dt.UTC)

    # -- for the executor ----------------------------------------------------------------------

    def _suspend(self, wake_at: float | None) -> Suspend:
        if self.deadline is not None and not self._compensating:
            # A waiting run wakes at its deadline at the latest, to fail by it.
            wake_at = self.deadline if wake_at is None else min(wake_at, self.deadline)
        self._suspending = True
        self._wake_times.append(wake_at)
        return Suspend(wake_at)

    def request_unload(self, now: float) -> None:
        """Stop the run at its next step and unload it, runnable again at once (worker shutdown)."""
        self._suspending = True
        self._wake_times.append(now)

    def wake_at(self) -> float | None:
        """When the unloaded run should wake: the earliest timer its branches asked for."""
        times = [t for t in self._wake_times if t is not None]
        return min(times) if times else None

    async def settle(self) -> None:
        """Let branches still in flight finish their current step before the run is unloaded."""
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current and not t.done()]
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        await self.drain()

    async def drain(self) -> None:
        """Wait until every queued journal write is committed."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        if self._lost is not None:
            raise self._lost

    def check_replayed_all(self) -> None:
        """At the end of a run, the journal must hold no step the code did not ask for."""
        if self.nondeterminism is not None:
            raise self.nondeterminism
        if self._last_recorded >= self._next_seq:
            extra = self._journal[min(s for s in self._journal if s >= self._next_seq)]
            self.nondeterminism = NonDeterminismError(
                f"run {self.run_id}: the workflow finished after {self._next_seq - 1} steps but "
                f"the journal holds step {extra.seq} ({extra.kind} {extra.name!r}); the code "
                "changed since the run started",
                run_id=self.run_id,
                seq=extra.seq,
                recorded=f"{extra.kind} {extra.name}",
                requested="(end of workflow)",
            )
            raise self.nondeterminism

    def enter(self) -> contextvars.Token[RunContext | None]:
        return _current_context.set(self)

    @staticmethod
    def leave(token: contextvars.Token[RunContext | None]) -> None:
        _current_context.reset(token)


_DEADLINE_CODE = f'"{RunDeadlineExceeded.code}"'
_DEADLINE_IDS = ("run_id", "seq", "step", "deadline")
"""How a journaled `RunDeadlineExceeded` is recognised and rebuilt on replay."""


class _OnFirstSuspension:
    """Awaits a coroutine, calling `hook` once if (and when) the coroutine first suspends.

    Delegates sends and throws exactly as `await` does, so the coroutine cannot tell.
    """

    __slots__ = ("_coro", "_hook")

    def __init__(self, coro: Coroutine[Any, Any, Any], hook: Callable[[], None]) -> None:
        self._coro = coro
        self._hook = hook

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            return done.value
        self._hook()
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    yielded = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    return done.value


class ChildHandle:
    """A child run started by `ctx.start_child`."""

    def __init__(self, ctx: RunContext, run_id: str, workflow: Workflow[Any, Any]) -> None:
        self._ctx = ctx
        self.run_id = run_id
        self.workflow = workflow

    def result(self) -> Coroutine[Any, Any, Any]:
        """Wait for the child's result (raises `ChildRunFailed` if it failed or was cancelled)."""
        return self._wait(self._ctx._take_seq())

    def _wait(self, seq: int) -> Coroutine[Any, Any, Any]:
        return self._ctx._wait_for_child(seq, self)


def _step_failed(
    run_id: str, seq: int, name: str, error: str | None
) -> StepFailed | NotSerializable:
    cause = json.loads(error or "{}")
    if cause.get("code") == NotSerializable.code:
        return NotSerializable(
            cause.get("message", ""),
            where=cause.get("where"),
            value_type=cause.get("value_type"),
        )
    return StepFailed(
        f"step {seq} ({name}) of run {run_id} failed: {cause.get('type')}: {cause.get('message')}",
        run_id=run_id,
        seq=seq,
        step=name,
        error_type=cause.get("type"),
        error_message=cause.get("message"),
        error_code=cause.get("code"),
    )


def _child_failed(run_id: str, child_run_id: str, error: str | None) -> ChildRunFailed:
    cause = json.loads(error or "{}")
    return ChildRunFailed(
        f"child run {child_run_id} of run {run_id} did not succeed: {cause.get('message')}",
        run_id=run_id,
        child_run_id=child_run_id,
        error_code=cause.get("code"),
    )
