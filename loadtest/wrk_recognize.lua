-- wrk script: POST one multipart upload to /v1/recognize, body and content type from the environment
-- (written by benchmarks/external.py):  KWS_WRK_BODY=body.bin KWS_WRK_CONTENT_TYPE='multipart/form-data; boundary=...'
--   wrk -t2 -c16 -d10s --latency -s loadtest/wrk_recognize.lua http://127.0.0.1:8000/v1/recognize
local file = assert(io.open(os.getenv("KWS_WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("KWS_WRK_CONTENT_TYPE")
