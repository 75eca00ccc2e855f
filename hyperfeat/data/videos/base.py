"""What the video data sets share: a list of names, each loaded on demand, and the one sample
type of a video with point tracks (TAP-Vid, the synthetic clips), read alike by the tracking
evaluation and temporal training."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Union


class VideoDataset(ABC):
    """A sequence of videos by name: ``len``, iteration and ``[index or name]`` all go through
    :meth:`load`, so nothing is read before it is asked for."""

    names: list[str]  # the videos' names, in order (an attribute or a property of the subclass)

    @abstractmethod
    def load(self, name: str) -> Any:
        """The sample of one video."""

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Any]:
        for name in self.names:
            yield self.load(name)

    def __getitem__(self, item: Union[int, str]) -> Any:
        return self.load(self.names[item] if isinstance(item, int) else item)


@dataclass
class TrackedVideo:
    """A video with point tracks, whatever made it: frames (T, H, W, 3) uint8 (an array or a
    tensor; None when not loaded), points (N, T, 2) float32 xy in pixels of frames of ``size``
    (W, H), occluded (N, T) bool. Subclasses add what their source also has (TAP-Vid's index,
    the synthetic clips' queries and object masks)."""

    name: str
    frames: Any
    points: Any
    occluded: Any
    size: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[1])
