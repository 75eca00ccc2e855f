"""What the video data sets share: a list of names, each loaded on demand."""

from __future__ import annotations

from abc import ABC, abstractmethod
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
