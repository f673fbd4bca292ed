"""Streamlit glue for the Live page: the camera (or the bundled clip) through ``streamlit-webrtc``
into a per-session ``cnnviz.live.LiveProcessor``, a check of the browser's camera, and the ICE
servers.

Frames arrive in streamlit-webrtc's worker thread, where no Streamlit call is allowed: the
callback only hands the frame to the session's processor and returns the latest composite
frame, so the video never waits for the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import av
import streamlit as st
from streamlit_webrtc import WebRtcMode, create_video_source_track, webrtc_streamer

from cnnviz.live import CLIP_PHOTOS, MAX_SIDE, BundledClip, LiveProcessor
from cnnviz.models import LoadedModel
from cnnviz.samples import digit_sample_names
from ui import freeze_image
from ui.admission import gate
from ui.training import session_uid

CAMERA, CLIP = "Your camera", "Bundled clip"
CLIP_FPS = 15
CAMERA_FPS = 15
"""Frames per second asked of the camera: more than a CPU processes (SqueezeNet: about 10-25), and each
frame still costs decoding, scaling and re-encoding on the server and in the browser; frames beyond what
the model takes are dropped, so asking for 30 only spends CPU that the model needs."""

_CAMERA_CHECK_JS = """
export default function(component) {
  const { setStateValue } = component;
  let last = null, timer = null;
  const report = (status) => { if (status !== last) { last = status; setStateValue("status", status); } };
  (async () => {
    const media = navigator.mediaDevices;
    if (!window.isSecureContext || !media || !media.getUserMedia) { report("insecure"); return; }
    try {
      const devices = await media.enumerateDevices();
      if (!devices.some((d) => d.kind === "videoinput")) { report("no camera"); return; }
    } catch (e) { report("no camera"); return; }
    let permission = null;
    try { permission = await navigator.permissions.query({ name: "camera" }); } catch (e) { /* not queryable */ }
    const check = () => report(permission && permission.state === "denied" ? "refused" : "available");
    check();
    // the person may refuse when START asks: watch the permission (polling too, as not every browser
    // fires "change" for a refusal made in the stream's frame)
    if (permission) { permission.onchange = check; timer = setInterval(check, 1000); }
  })();
  return () => { if (timer) clearInterval(timer); };
}
"""

CAMERA_MESSAGES = {
    "insecure": "This browser allows the camera only on **https** or **localhost** pages, so it is off here.",
    "no camera": "No camera was found on this computer.",
    "refused": "The browser refused the camera for this page (see the camera icon in the address bar).",
}


@st.cache_resource(show_spinner=False)
def _camera_check():
    return st.components.v2.component("cnnviz_camera_check", js=_CAMERA_CHECK_JS)


def camera_status() -> str | None:
    """What the browser says about its camera: "available", "no camera", "refused", "insecure", or
    None until it has answered (the first run of the page)."""
    result = _camera_check()(key="live_camera_check", on_status_change=lambda: None)
    return getattr(result, "status", None)


def keep_steady(key: str) -> None:
    """Don't fade the container ``key`` while its fragment reruns: refreshed every second, it would
    flicker (Streamlit dims elements of a running script)."""
    st.html(f"<style>.st-key-{key} [data-stale='true'] {{opacity: 1 !important; transition: none !important;}}</style>")


def ice_servers() -> list[dict]:
    """ICE servers for WebRTC: none by default (a browser on the server's machine or LAN connects
    directly); a deployment behind NAT sets ``[webrtc] ice_servers = [{urls = [...]}, ...]`` in
    ``.streamlit/secrets.toml``."""
    try:
        return [dict(server) for server in st.secrets.get("webrtc", {}).get("ice_servers", [])]
    except FileNotFoundError:
        return []
    except Exception:  # noqa: BLE001 - a missing or unreadable secrets file means no servers
        return []


@dataclass
class LiveSession:
    """One session's live stream: its processor and which source may feed it (one at a time)."""

    processor: LiveProcessor = field(default_factory=LiveProcessor)
    source: str = CAMERA
    clip: BundledClip | None = None


def session() -> LiveSession:
    """This browser session's live stream (created on first use). Each frame takes a turn at the
    server's admission gate (``ui.admission``), as the stream's own owner: a session's live stream and
    its other heavy job (a training run, say) do not wait for each other."""
    if "_live_session" not in st.session_state:
        processor = LiveProcessor(gate=gate(), owner=f"{session_uid()} live")
        st.session_state["_live_session"] = LiveSession(processor)
    return st.session_state["_live_session"]


def prepare_clip(live: LiveSession, model: LoadedModel) -> None:
    """Give the session the bundled clip that suits the model: held-out digits for a one-channel model
    (the small CNN), gallery photos otherwise."""
    names = tuple(digit_sample_names()) if model.input_size[0] == 1 else CLIP_PHOTOS
    if live.clip is None or live.clip.names != names:
        live.clip = BundledClip(names)


def freeze(live: LiveSession) -> None:
    """The Freeze button's callback: the latest processed frame becomes the session's image."""
    result = live.processor.latest()
    if result is None:
        st.toast("No frame yet: press START first.", icon=":material/info:")
        return
    freeze_image(result.image, f"Live frame {time.strftime('%H:%M:%S')}")
    st.toast("Frozen: the other pages now use this frame.", icon=":material/ac_unit:")


def _frame_callback(live: LiveSession, source: str):
    """The streamlit-webrtc callback: submit the frame, return the latest composite at once."""

    def callback(frame: av.VideoFrame) -> av.VideoFrame:
        if live.source != source:  # the other source's stream is winding down: pass it through
            return frame
        scale = min(1.0, MAX_SIDE / max(frame.width, frame.height))
        image = frame.to_ndarray(format="rgb24", width=max(2, round(frame.width * scale) // 2 * 2),
                                 height=max(2, round(frame.height * scale) // 2 * 2))
        live.processor.submit(image)
        result = live.processor.latest()
        shown = result.composite if result is not None and result.composite is not None else image
        return av.VideoFrame.from_ndarray(shown, format="rgb24")

    return callback


def _clip_source(live: LiveSession):
    def make_frame(pts: int, time_base) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(live.clip.frame_at(float(pts * time_base)), format="rgb24")

    return make_frame


def _served() -> bool:
    """Whether a real Streamlit server runs this script: streamlit-webrtc looks its session up in the
    server's session manager, which AppTest's stand-in runtime does not have."""
    from streamlit.runtime import Runtime

    return Runtime.exists() and hasattr(Runtime.instance(), "_session_mgr")


def stream(live: LiveSession, source: str):
    """The video element with its START/STOP button, from the camera or the bundled clip.

    Returns:
        streamlit-webrtc's context (``.state.playing``), or None (with a message) when no real
        server runs the script (AppTest).
    """
    live.source = source
    if not _served():
        st.info("The video stream needs the app's server (`make run`).")
        return None
    config = {"iceServers": ice_servers()}
    if source == CAMERA:
        return webrtc_streamer(
            key="live_camera", mode=WebRtcMode.SENDRECV, rtc_configuration=config,
            media_stream_constraints={"video": {"width": {"ideal": MAX_SIDE}, "frameRate": {"ideal": CAMERA_FPS, "max": CAMERA_FPS}},
                                      "audio": False},
            video_frame_callback=_frame_callback(live, CAMERA),
        )
    track = create_video_source_track(_clip_source(live), key="live_clip_source", fps=CLIP_FPS)
    return webrtc_streamer(
        key="live_clip", mode=WebRtcMode.RECVONLY, rtc_configuration=config,
        media_stream_constraints={"video": True, "audio": False},
        source_video_track=track, video_frame_callback=_frame_callback(live, CLIP),
    )
