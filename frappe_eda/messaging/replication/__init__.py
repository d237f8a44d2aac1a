"""Document replication between servers, the part that needs no framework.

A source publishes each change of a document as a message whose payload is the document (``doctype``,
``name``, ``modified``, ``docstatus`` and its fields) and whose type ends in the event
(``item.on_update``). A subscriber applies it to its own copy. What to apply, in which order, and what to
do when the copy changed locally are decided here, from plain values, so that the rules are the same (and
tested the same) wherever the writing happens; the Frappe layer (``frappe_eda.replication``) reads and
writes the documents.

- ``versions``: the version of a document a message carries, and which of two is newer.
- ``events``: what a subscriber does for each event (upsert, submit, cancel, delete, rename).
- ``planning``: given what the subscriber applied last and its copy now, apply, skip as stale or as
  already applied, or refuse as a conflict.
- ``mapping``: source fields to local fields (rename, skip, default, constant; child tables too).
- ``addressing``: which server a message is for, where it came from (no echo), where receipts go.
- ``receipts``: the small message a subscriber sends back to say it applied or refused a document.
- ``digests``: compact block digests for reconciliation (anti-entropy).
"""
