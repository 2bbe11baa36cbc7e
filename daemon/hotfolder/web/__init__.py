"""The operator console and its HTTP API (SPEC 11), served inside `hotfolder run`.

- `console`: what the console does with jobs, apart from HTTP (views, files, retry,
  process again, delete), against a small `Backend`: the journal, the intake's claim,
  the recipe book and the layout.
- `uploads`: multipart uploads read as they stream, within the limits, into private
  temporary files on the inbox's filesystem, then claimed as dropped files.
- `previews`: small images made from decoded pixels of scanned files.
- `events`: server-sent events of every change of a job's state, from the journal.
- `app`: the Starlette application: routes, the token, the origin check, metrics.
- `openapi`: the description of the API.
- `server`: uvicorn in a thread of the service.
- `static/`: the page, its script and its style sheet, served from the package.
"""
