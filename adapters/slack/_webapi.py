"""The Web API client's names, from the modules that hold them since the split
(:mod:`._client`, :mod:`._pacing`, :mod:`._files`, :mod:`._errors`); kept so
that imports written before it still work."""

from ._client import METHOD_TIERS as METHOD_TIERS
from ._client import POST_MESSAGE as POST_MESSAGE
from ._client import SlackWebClient as SlackWebClient
from ._client import WebApiSettings as WebApiSettings
from ._client import WebApiStatistics as WebApiStatistics
from ._errors import AUTH_ERRORS as AUTH_ERRORS
from ._errors import TRANSIENT_ERRORS as TRANSIENT_ERRORS
from ._errors import SlackApiError as SlackApiError
from ._errors import is_transient as is_transient
from ._errors import translate_httpx_error as translate_httpx_error
from ._files import Download as Download
from ._pacing import Budget as Budget
from ._pacing import Pacer as Pacer
from ._pacing import TokenBucket as TokenBucket
