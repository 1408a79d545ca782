"""The XMPP adapter: an XMPP server component (XEP-0114) with a pure stanza translation layer."""
