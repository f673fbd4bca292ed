"""The last-resort error boundary: an unexpected error on a page becomes an ``st.error`` that says
what to do next, never a traceback in the browser.

Expected bad input (an image that cannot be read, weights for another network, a parameter out of
range) is turned into a message where it arises (``cnnviz.images.ImageError``, ``ui.run_or_explain``);
this boundary only catches what slipped through, and logs its traceback on the server, where it is a
defect to fix. Streamlit's control flow (``st.stop``, ``st.rerun``, ``st.switch_page``) raises
``BaseException`` subclasses, which ``except Exception`` lets pass untouched.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st
from streamlit.logger import get_logger

_LOG = get_logger(__name__)
MAX_REASON = 200  # characters of the error's own message shown to the student


def short_reason(error: BaseException) -> str:
    """One line saying what went wrong: the error's first line, cut to ``MAX_REASON`` characters.

    Args:
        error: the exception caught.

    Returns:
        "<message>" or, when the message is empty, the exception's type name.
    """
    text = str(error).strip().strip("'\"").splitlines()
    reason = text[0].strip() if text else ""
    if not reason:
        return type(error).__name__
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def guarded(fn: Callable[[], object], where: str = "page") -> bool:
    """Run ``fn`` (a page, the sidebar); an unexpected error becomes a message instead of a traceback.

    The session's state is left as ``fn`` left it; other sessions share nothing it was writing
    (``ui.cached`` stores a result only once it is complete).

    Args:
        fn: what to run, without arguments.
        where: "page" or "sidebar", for the message.

    Returns:
        True when ``fn`` finished (or stopped or reran itself through Streamlit), False after an error.
    """
    try:
        fn()
    except Exception as error:  # BaseException (st.stop, st.rerun, st.switch_page) passes through
        _LOG.error("Unexpected error on the %s, shown to the user as a message", where, exc_info=error)
        st.error(f"Something went wrong on this {where}: {short_reason(error)}. Try another image, model or "
                 "setting, or reload the page; other sessions are not affected.", icon=":material/error:")
        return False
    return True
