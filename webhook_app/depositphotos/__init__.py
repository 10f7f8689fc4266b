"""The Depositphotos protocol: the API client and its errors, callback payload decoding,
what a report means for a job, and the job kinds (imageGenerator).

Imports only `webhook_app.states`, `webhook_app.settings` and `webhook_app.infra`; never
the web edge, the workers or the tools."""
