"""Who sent a message, proven rather than claimed, and what each server may do on the broker.

A message's body says where it comes from (``source``); anyone who can publish can write anything there.
What the broker proves is the AMQP ``user_id`` property: RabbitMQ refuses a publish whose ``user_id`` is
not the connection's own user, so a message that arrives with ``user_id`` "wh1" was published by a
connection that logged in as wh1. With one broker user per server, that names the server.

- ``senders``: the verified sender of a delivery and the policy a queue applies to it.
- ``signing``: optional Ed25519 signatures over the body, checked against the source's public keys;
  they hold even where the broker's proof does not travel (a shovel, a federation link, a user with
  RabbitMQ's ``impersonator`` tag).
- ``permissions``: least-privilege broker permissions for one server, from the traffic it needs.
- ``broker_users``: creating and updating that server's broker user through the management HTTP API,
  or as ``rabbitmqctl`` commands an operator runs.
"""

from frappe_eda.messaging.trust.senders import SENDER, SenderPolicy, verified_sender
from frappe_eda.messaging.trust.signing import SIGNATURE, KeyRing, SigningKey

__all__ = ["SENDER", "SIGNATURE", "KeyRing", "SenderPolicy", "SigningKey", "verified_sender"]
