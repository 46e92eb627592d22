"""`/api/attachments/ID`: an image or file of a question, served back to its owner only."""

from __future__ import annotations

from flask import Blueprint, Response, redirect

from chatproxy.access.keys import current_owner
from chatproxy.store.attachments import find_attachment
from chatproxy.store.database import db
from chatproxy.web.conversations_api import attachment as disposition

bp = Blueprint("attachments", __name__, url_prefix="/api/attachments")


@bp.get("/<int:attachment_id>")
def show(attachment_id: int) -> Response:
    """The bytes of attachment `attachment_id`, as they were attached.

    Only the owner of its conversation gets it (the rules of
    `/api/conversations`): anyone else gets 404 `attachment_not_found`, as
    for one that does not exist. `Content-Type` is the type read from its
    bytes when it was attached; images are shown `inline`, files downloaded
    (`attachment`, with their name); `X-Content-Type-Options: nosniff`, and
    private caching for a day (an attachment never changes). An image given
    as an `https` URL was never fetched: its URL is a 302's `Location`.
    """
    found = find_attachment(db.session, attachment_id, current_owner())
    if found.data is None and found.url:
        return redirect(found.url, 302)  # type: ignore[return-value]
    response = Response(found.data or b"", mimetype=found.media_type)
    name = found.name or (f"image-{found.id}" if found.kind == "image" else f"file-{found.id}")
    if found.kind == "image":
        response.headers["Content-Disposition"] = disposition(name).replace(
            "attachment;", "inline;", 1
        )
    else:
        response.headers["Content-Disposition"] = disposition(name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=86400"
    # A file's bytes are never a page of this origin, whatever they hold.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
