"""The Slack adapter: Events API (HTTP and Socket Mode) and Web API, plus a local sandbox.

``adapters.slack.sandbox`` is a local Slack-compatible server for demos and tests.
What other packages may use is re-exported here; modules stay private.
"""

from ._adapter import SlackAdapter as SlackAdapter
from ._client import SlackWebClient as SlackWebClient
from ._client import WebApiSettings as WebApiSettings
from ._installations import SlackInstallationConfig as SlackInstallationConfig
from ._installations import SlackSecrets as SlackSecrets
from ._installations import SlackSettings as SlackSettings
from ._spec import SANDBOX as SANDBOX
from ._spec import SPEC as SPEC
from ._spec import SandboxHandle as SandboxHandle
from ._spec import SandboxSection as SandboxSection
from ._spec import SlackAdapterConfig as SlackAdapterConfig
from ._spec import SlackInstallationEntry as SlackInstallationEntry
