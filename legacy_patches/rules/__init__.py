"""The rewrite rules, one small module each. The order of ALL is the order they run in."""
from .async_keyword import AsyncKeyword
from .autograd_function import LegacyAutogradFunction
from .cuda import CudaToDevice
from .msgpack import PandasMsgpack
from .overloads import ScalarFirst
from .reduction import Reduction
from .scalars import CountSumItem, DataIndexItem, MeterIndexItem
from .torch_load import TorchLoadWeightsOnly
from .trainlog import TrainLogFlushAtExit
from .transforms import RenamedTransforms
from .view import ViewReshape
from .volatile import Volatile

# In-place edits first; rules that add lines (no_grad blocks, comments) last, so that the line
# numbers in reports stay close to the file as it was.
ALL = (
    AsyncKeyword(),
    DataIndexItem(),
    MeterIndexItem(),
    CountSumItem(),
    Reduction(),
    ScalarFirst(),
    ViewReshape(),
    RenamedTransforms(),
    LegacyAutogradFunction(),
    PandasMsgpack(),
    CudaToDevice(),
    TrainLogFlushAtExit(),
    TorchLoadWeightsOnly(),
    Volatile(),
)
