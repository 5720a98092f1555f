"""An ended study session as an xAPI 1.0.3 statement: pure, no I/O.

The statement id is a UUID v5 of the session id (:func:`statement_id`), so
every way a session reaches an LRS (the forwarder, a retry after a crash, a
backfill with ``report sessions --format=xapi``) carries the same id, and an
LRS that already has it answers ``204`` (same statement) or ``409`` (a
different one), never stores it twice.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from settings import Settings
from tracking.session import SessionRecord

#: The UUID v5 namespace of study-time statement ids: uuid5(NAMESPACE_URL, this URL). Never change it:
#: ids derived under another namespace would be new statements to an LRS that has the old ones.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/study-time/xapi/statement-id")
#: The xAPI version sent as X-Experience-API-Version.
VERSION = "1.0.3"
DEFAULT_VERB = "http://adlnet.gov/expapi/verbs/attended"
#: Activity type of the object: a course (ADL vocabulary).
COURSE_TYPE = "http://adlnet.gov/expapi/activities/course"


@dataclass(frozen=True, slots=True)
class StatementConfig:
    """What a statement is made of beyond the record: ``--xapi-*`` settings.

    ``verb`` and ``activity`` are templates: ``{courseId}`` and ``{userId}``
    are replaced by the ids, percent-encoded (ids are 1-128 characters of
    letters, digits and ``_ . : @ -``, so they stay readable).
    """

    home_page: str
    activity: str
    verb: str = DEFAULT_VERB
    verb_display: str = "attended"
    extensions: str = ""  # the IRI the extension names are appended to; "" means HOME_PAGE/xapi/extensions/

    @property
    def extension_base(self) -> str:
        return self.extensions or f"{self.home_page.rstrip('/')}/xapi/extensions/"


def config_from(settings: Settings) -> StatementConfig | None:
    """The statements' configuration from the ``--xapi-*`` settings; None without ``--xapi-home-page``."""
    home = settings.xapi_home_page
    if home is None:
        return None
    return StatementConfig(
        home_page=home,
        activity=settings.xapi_activity or f"{home.rstrip('/')}/courses/{{courseId}}",
        verb=settings.xapi_verb,
        extensions=settings.xapi_extensions or "",
    )


def statement_id(session_id: str) -> str:
    """The statement id of a session: UUID v5 of its id, the same every time."""
    return str(uuid.uuid5(NAMESPACE, session_id))


def iso_duration(seconds: float) -> str:
    """Seconds as an ISO 8601 duration to the hundredth (xAPI's precision): ``PT1H2M3.5S``, ``PT0S``."""
    hundredths = max(0, math.floor(round(seconds * 100, 6)))
    whole, frac = divmod(hundredths, 100)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT"
    if hours:
        text += f"{hours}H"
    if minutes:
        text += f"{minutes}M"
    if secs or frac or text == "PT":
        text += f"{secs}.{frac:02d}".rstrip("0").rstrip(".") + "S"
    return text


def iso_time(instant: float) -> str:
    """Server seconds as an ISO 8601 UTC timestamp to the millisecond, ``Z``."""
    return datetime.fromtimestamp(instant, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fill(template: str, record: SessionRecord) -> str:
    return template.replace("{courseId}", quote(record.course_id, safe="")).replace(
        "{userId}", quote(record.user_id, safe="")
    )


def statement(record: SessionRecord, config: StatementConfig) -> dict:
    """The statement of an ended session (``ValueError`` for an open one: it has no duration yet)."""
    if record.is_open:
        raise ValueError(f"session {record.session_id} is still open")
    ext = config.extension_base
    return {
        "id": statement_id(record.session_id),
        "actor": {
            "objectType": "Agent",
            "account": {"homePage": config.home_page, "name": record.user_id},
        },
        "verb": {"id": fill(config.verb, record), "display": {"en-US": config.verb_display}},
        "object": {
            "objectType": "Activity",
            "id": fill(config.activity, record),
            "definition": {"type": COURSE_TYPE},
        },
        "result": {"duration": iso_duration(record.seconds)},
        "context": {
            "platform": "study-time",
            "extensions": {
                f"{ext}session-id": record.session_id,
                f"{ext}end-reason": record.end_reason,
                f"{ext}course-id": record.course_id,
                f"{ext}ended-at": iso_time(
                    record.ended_at if record.ended_at is not None else record.credited_until
                ),
            },
        },
        "timestamp": iso_time(record.started_at),
        # No "version": the spec leaves it to the LRS (a provider should not set it).
    }
