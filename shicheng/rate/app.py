"""The rating app: FastAPI pages for raters (one item at a time, autosaved) and a coordinator's progress page.

    app = create_app("runs/rate/ratings.db")      # or a postgresql:// URL; `shicheng rate serve` runs it

Pages never carry a system's name, an item id or a predictions file name: a rater addresses items only by
position in their own queue (ratings.py). Every state-changing request needs the session's CSRF token
(a form field, or the X-CSRF-Token header for autosave); sessions expire after `session_ttl_s` without a
request and after `session_max_s` in any case.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from shicheng.domain import SECTION_BY_KEY, SECTION_KEYS
from shicheng.rate import ratings
from shicheng.rate.auth import csrf_ok, find_session, open_session, redeem_link, verify_password
from shicheng.rate.db import Account, Store, Study, WebSession, audit, now
from shicheng.rate.export import export_text
from shicheng.rate.i18n import WORDS, pick_lang
from shicheng.rate.rubric import load_rubric
from shicheng.rate.study import progress_rows
from shicheng.template import parse_answer

HERE = Path(__file__).parent
SESSION_COOKIE, LOGIN_CSRF_COOKIE, LANG_COOKIE = "rate_session", "rate_login_csrf", "rate_lang"


class Denied(Exception):
    def __init__(self, status: int, key: str):
        self.status, self.key = status, key


def answer_sections(output: str, lang: str) -> list[dict]:
    """The answer as headed sections in the template's order; the raw text when nothing parses."""
    parsed = parse_answer(output).answer
    out = []
    for key in SECTION_KEYS:
        text = getattr(parsed, key)
        if text:
            spec = SECTION_BY_KEY[key]
            out.append({"key": key, "heading": spec.en if lang == "en" else spec.zh, "text": text})
    return out or [{"key": "raw", "heading": WORDS[lang]["raw"], "text": output}]


def create_app(db: str | Path | Store, *, session_ttl_s: float = 2 * 3600, session_max_s: float = 12 * 3600,
               link_max_age_s: float = 14 * 86400, secure_cookies: bool = False) -> FastAPI:
    store = db if isinstance(db, Store) else Store(db)
    secret = store.secret()
    rubric = load_rubric()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2", "html"]))
    app = FastAPI(title="shicheng rating", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # a one-time link never leaks in a Referer
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "frame-ancestors 'none'; form-action 'self'")
        return response

    def lang_of(request: Request) -> str:
        return pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        lang = lang_of(request)
        html = env.get_template(name).render(w=WORDS[lang], lang=lang, other="en" if lang == "zh" else "zh", **ctx)
        resp = HTMLResponse(html, status_code=status)
        if request.query_params.get("lang") == lang:
            resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", secure=secure_cookies)
        return resp

    def signed_in(request: Request, s, role: str | None = None) -> tuple[WebSession, Account]:
        found = find_session(s, request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise Denied(401, "expired")
        ws, account = found
        if ws.created_at + session_max_s <= now():
            s.delete(ws)
            raise Denied(401, "expired")
        ws.expires_at = min(now() + session_ttl_s, ws.created_at + session_max_s)
        if role and account.role != role:
            raise Denied(403, "not_found")
        return ws, account

    @app.exception_handler(Denied)
    async def denied(request: Request, exc: Denied):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.key, "message": WORDS[lang_of(request)][exc.key]}, status_code=exc.status)
        if exc.status == 401:
            return RedirectResponse("/login?expired=1", status_code=303)
        return page(request, "message.html.j2", status=exc.status, message=WORDS[lang_of(request)][exc.key])

    def start_session(account: Account, s, target: str) -> RedirectResponse:
        token, _ = open_session(s, account, session_ttl_s)
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies,
                        max_age=int(session_max_s))
        resp.delete_cookie(LOGIN_CSRF_COOKIE)
        return resp

    def home_of(account: Account) -> str:
        return "/admin" if account.role == "coordinator" else "/rate"

    @app.get("/", include_in_schema=False)
    def root(request: Request):
        with store.session() as s:
            found = find_session(s, request.cookies.get(SESSION_COOKIE))
            return RedirectResponse(home_of(found[1]) if found else "/login", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, expired: int = 0):
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        resp = page(request, "login.html.j2", csrf=token, error=WORDS[lang_of(request)]["expired"] if expired else None)
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies)
        return resp

    @app.post("/login")
    def login(request: Request, login: str = Form(...), password: str = Form(...), csrf: str = Form("")):
        if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
            raise Denied(403, "csrf")
        with store.session() as s:
            account = s.scalar(select(Account).where(Account.login == login.strip()))
            if account is None or not verify_password(password, account.password_hash):
                audit(s, login.strip()[:200] or "(empty)", "login_failed")
                return page(request, "login.html.j2", status=401, csrf=csrf, error=WORDS[lang_of(request)]["bad_login"])
            audit(s, account, "login", method="password")
            return start_session(account, s, home_of(account))

    @app.get("/link/{token}")
    def link(request: Request, token: str):
        with store.session() as s:
            account = redeem_link(s, secret, token, link_max_age_s)
            if account is None:
                audit(s, "(link)", "link_refused")
            else:
                audit(s, account, "login", method="link")
                return start_session(account, s, home_of(account))
        return page(request, "message.html.j2", status=403, message=WORDS[lang_of(request)]["bad_link"])

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")):
        with store.session() as s:
            ws, account = signed_in(request, s)
            if not csrf_ok(ws.csrf, csrf):
                raise Denied(403, "csrf")
            audit(s, account, "logout")
            s.delete(ws)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    @app.get("/rate")
    def resume(request: Request):
        with store.session() as s:
            ws, rater = signed_in(request, s, "rater")
            entries = ratings.queue(s, rater)
            pos = ratings.resume_position(entries)
            if pos is None:
                return page(request, "done.html.j2", total=len(entries), rater=rater.display_name, csrf=ws.csrf)
            return RedirectResponse(f"/rate/{pos}", status_code=303)

    @app.get("/rate/{position}", response_class=HTMLResponse)
    def rate_page(request: Request, position: int):
        lang = lang_of(request)
        with store.session() as s:
            ws, rater = signed_in(request, s, "rater")
            entries = ratings.queue(s, rater)
            entry = next((e for e in entries if e.assignment.position == position), None)
            if entry is None:
                raise Denied(404, "not_found")
            study = s.get(Study, rater.study_id)
            r = entry.rating
            state = {"levels": dict(r.levels) if r else {}, "comment": r.comment if r else "",
                     "cannot_judge": bool(r and r.cannot_judge), "version": r.version if r else 0,
                     "total": r.total if r else None}
            item = entry.item
            return page(request, "rate.html.j2", csrf=ws.csrf, position=position, total=len(entries),
                        done=sum(e.done for e in entries), rater=rater.display_name,
                        master=(study.sources.get("masters") or {}).get(item.master, item.master),
                        label=item.label, case_text=item.case_text, sections=answer_sections(item.output, lang),
                        rubric=rubric, state=state, state_json=json.dumps(state, ensure_ascii=False),
                        prev=position - 1 if position > 1 else None,
                        next=position + 1 if position < len(entries) else None)

    def _save(request: Request, position: int, payload: dict, token: str | None) -> dict:
        with store.session() as s:
            ws, rater = signed_in(request, s, "rater")
            if not csrf_ok(ws.csrf, token):
                raise Denied(403, "csrf")
            try:
                return ratings.save(s, rater, position, payload, rubric)
            except ratings.NotFound:
                raise Denied(404, "not_found") from None

    @app.post("/api/rate/{position}")
    def autosave(request: Request, position: int, body: dict):
        try:
            return _save(request, position, body, request.headers.get("x-csrf-token"))
        except ValueError as e:
            return JSONResponse({"error": "invalid", "message": str(e)}, status_code=422)

    @app.post("/rate/{position}")
    async def form_save(request: Request, position: int):
        # The no-JavaScript path, and the "save and next" button: the same save as autosave, then a redirect.
        form = await request.form()
        payload = {"levels": {k: form.get(f"level_{k}") or None for k in rubric.keys},
                   "comment": form.get("comment") or "", "cannot_judge": form.get("cannot_judge") == "on",
                   "seconds": form.get("seconds") or 0}
        go = form.get("go", "next")
        try:
            await run_in_threadpool(_save, request, position, payload, form.get("csrf"))
        except ValueError as e:
            return JSONResponse({"error": "invalid", "message": str(e)}, status_code=422)
        target = position - 1 if go == "prev" and position > 1 else position + 1
        return RedirectResponse(f"/rate/{target}" if go in ("prev", "next") else "/rate", status_code=303)

    @app.get("/api/progress")
    def my_progress(request: Request):
        with store.session() as s:
            _, rater = signed_in(request, s, "rater")
            entries = ratings.queue(s, rater)
            return {"done": sum(e.done for e in entries), "total": len(entries),
                    "resume": ratings.resume_position(entries)}

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        with store.session() as s:
            ws, account = signed_in(request, s, "coordinator")
            studies = s.scalars(select(Study).order_by(Study.id)).all()
            return page(request, "admin.html.j2", csrf=ws.csrf, account=account.login,
                        studies=[{"name": st.name, "rows": progress_rows(s, st)} for st in studies])

    @app.get("/admin/export/{study}.{fmt}")
    def export(request: Request, study: str, fmt: str):
        if fmt not in ("csv", "jsonl"):
            raise Denied(404, "not_found")
        with store.session() as s:
            _, account = signed_in(request, s, "coordinator")
            try:
                text = export_text(s, study, fmt)
            except ValueError:
                raise Denied(404, "not_found") from None
            audit(s, account, "export", study, format=fmt)
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8"
        return Response(text, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{study}-ratings.{fmt}"'})

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app


__all__ = ["create_app"]
