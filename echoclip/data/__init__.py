"""Echo data: decoding, readers, clip sampling, datasets and the simulator."""

from echoclip.data.video import Video, frame_indices, list_readers, load_video, register_reader, save_video
from echoclip.errors import DataError, VideoReadError

__all__ = [
    "Video",
    "VideoReadError",
    "DataError",
    "load_video",
    "save_video",
    "register_reader",
    "list_readers",
    "frame_indices",
]
