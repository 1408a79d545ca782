"""The Slack adapter: Events API (HTTP and Socket Mode) and Web API, plus a local sandbox.

``adapters.slack.sandbox`` is a local Slack-compatible server for demos and tests.
What other packages may use is re-exported here; modules stay private.
"""

from ._adapter import SlackAdapter as SlackAdapter
from ._adapter import SlackInstallationConfig as SlackInstallationConfig
from ._adapter import SlackSecrets as SlackSecrets
from ._adapter import SlackSettings as SlackSettings
from ._spec import SANDBOX as SANDBOX
from ._spec import SPEC as SPEC
from ._spec import SandboxHandle as SandboxHandle
from ._spec import SandboxSection as SandboxSection
from ._spec import SlackAdapterConfig as SlackAdapterConfig
from ._spec import SlackInstallationEntry as SlackInstallationEntry
from ._webapi import SlackWebClient as SlackWebClient
from ._webapi import WebApiSettings as WebApiSettings
