"use client";
// The whole UI is one client component. It never sees the session token: every API call goes to
// this page's own origin (/api/proxy/..., /api/chatkit) with `credentials: "include"`, the browser
// attaches the httpOnly cookie, and cookiegate turns it into `Authorization: Bearer` on the way to
// the backend.

import { FormEvent, useCallback, useEffect, useRef, useState } from "react";

type Task = { id: number; title: string; done: boolean };
type Upload = { id: number; name: string; size: number; content_type: string };
type Downloaded = { size: number; disposition: string; contentType: string; url: string; matches: boolean };
type SseRecord = { start: number; arrivals: number[]; tokens: string[]; done: boolean; status: number };

declare global {
  interface Window {
    /** Arrival times (performance.now() - start, ms) of each streamed token, for the e2e test. */
    __sse?: SseRecord;
    /** The bytes of the last download, for the e2e test. */
    __download?: number[];
  }
}

/** Calls the backend through the proxy route. The browser adds the cookie; nothing else does. */
function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`/api/proxy${path}`, { credentials: "include", ...init });
}

async function describe(method: string, url: string, res: Response): Promise<string> {
  const text = res.status === 204 ? "" : await res.clone().text();
  return `${method} ${url} → ${res.status}${text ? " " + text.slice(0, 120) : ""}`;
}

export default function Home() {
  const [user, setUser] = useState<string | null | undefined>(undefined);
  const [cookie, setCookie] = useState("");
  const [status, setStatus] = useState<{ text: string; ok: boolean }>({ text: "…", ok: true });
  const [tasks, setTasks] = useState<Task[]>([]);
  const [newTitle, setNewTitle] = useState("");
  const [editing, setEditing] = useState<{ id: number; title: string } | null>(null);
  const [file, setFile] = useState<File | null>(null);
  const [upload, setUpload] = useState<Upload | null>(null);
  const [downloaded, setDownloaded] = useState<Downloaded | null>(null);
  const uploadedBytes = useRef<Uint8Array | null>(null);
  const [question, setQuestion] = useState("What is on my list?");
  const [reply, setReply] = useState("");
  const [sse, setSse] = useState<SseRecord | null>(null);
  const [streaming, setStreaming] = useState(false);

  const show = useCallback(async (method: string, url: string, res: Response) => {
    setStatus({ text: await describe(method, url, res), ok: res.ok });
  }, []);

  const loadTasks = useCallback(async () => {
    const res = await api("/api/tasks");
    await show("GET", "/api/proxy/api/tasks", res);
    setTasks(res.ok ? ((await res.json()) as Task[]) : []);
    return res;
  }, [show]);

  const refresh = useCallback(async () => {
    setCookie(document.cookie);
    const me = await api("/api/me");
    if (me.ok) {
      setUser(((await me.json()) as { user: string }).user);
      await loadTasks();
    } else {
      setUser(null);
      await show("GET", "/api/proxy/api/me", me);
    }
  }, [loadTasks, show]);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  async function login(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const res = await fetch("/api/auth/login", {
      method: "POST",
      credentials: "include",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    await show("POST", "/api/auth/login", res);
    if (res.ok) await refresh();
  }

  async function logout() {
    const res = await fetch("/api/auth/logout", { method: "POST", credentials: "include" });
    await show("POST", "/api/auth/logout", res);
    setUser(null);
    setTasks([]);
    setCookie(document.cookie);
    // The cookie is gone: the proxy now refuses, and the page shows it.
    await loadTasks();
  }

  async function createTask(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const res = await api("/api/tasks", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: newTitle }),
    });
    await show("POST", "/api/proxy/api/tasks", res);
    if (res.ok) {
      setNewTitle("");
      await loadTasks();
    }
  }

  async function updateTask(id: number, patch: Partial<Pick<Task, "title" | "done">>) {
    const res = await api(`/api/tasks/${id}`, {
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(patch),
    });
    await show("PATCH", `/api/proxy/api/tasks/${id}`, res);
    if (res.ok) {
      const task = (await res.json()) as Task;
      setTasks((all) => all.map((t) => (t.id === id ? task : t)));
    }
  }

  async function deleteTask(id: number) {
    const res = await api(`/api/tasks/${id}`, { method: "DELETE" });
    await show("DELETE", `/api/proxy/api/tasks/${id}`, res);
    if (res.status === 204) setTasks((all) => all.filter((t) => t.id !== id));
  }

  async function uploadFile(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (!file) return;
    uploadedBytes.current = new Uint8Array(await file.arrayBuffer());
    const body = new FormData();
    body.append("file", file, file.name);
    // No Content-Type here: the browser writes multipart/form-data with its boundary.
    const res = await api("/api/files", { method: "POST", body });
    await show("POST", "/api/proxy/api/files", res);
    setDownloaded(null);
    setUpload(res.ok ? ((await res.json()) as Upload) : null);
  }

  async function downloadFile() {
    if (!upload) return;
    const res = await api(`/api/files/${upload.id}`);
    await show("GET", `/api/proxy/api/files/${upload.id}`, res);
    if (!res.ok) return;
    const bytes = new Uint8Array(await res.arrayBuffer());
    window.__download = Array.from(bytes);
    const sent = uploadedBytes.current;
    const contentType = res.headers.get("content-type") ?? "";
    setDownloaded({
      size: bytes.length,
      disposition: res.headers.get("content-disposition") ?? "(none)",
      contentType,
      url: URL.createObjectURL(new Blob([bytes], { type: contentType })),
      matches: !!sent && sent.length === bytes.length && sent.every((b, i) => b === bytes[i]),
    });
  }

  async function ask(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setReply("");
    setStreaming(true);
    const record: SseRecord = { start: performance.now(), arrivals: [], tokens: [], done: false, status: 0 };
    window.__sse = record;
    setSse({ ...record });
    try {
      const res = await fetch("/api/chatkit", {
        method: "POST",
        credentials: "include",
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body: JSON.stringify({ message: question }),
      });
      record.status = res.status;
      if (!res.ok || !res.body) {
        await show("POST", "/api/chatkit", res);
        return;
      }
      setStatus({ text: `POST /api/chatkit → ${res.status} ${res.headers.get("content-type")} (streaming)`, ok: true });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const raw = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          let data = "";
          for (const line of raw.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trimStart();
          }
          if (name === "token") {
            const token = (JSON.parse(data) as { token: string }).token;
            record.arrivals.push(Math.round(performance.now() - record.start));
            record.tokens.push(token);
            setReply((r) => r + token);
          } else if (name === "done") {
            record.done = true;
          }
          setSse({ ...record, arrivals: [...record.arrivals] });
        }
      }
    } finally {
      setSse({ ...record, arrivals: [...record.arrivals] });
      setStreaming(false);
    }
  }

  const arrivals = sse?.arrivals ?? [];
  const spread = arrivals.length > 1 ? arrivals[arrivals.length - 1] - arrivals[0] : 0;

  return (
    <main>
      <header>
        <div>
          <h1>Tasks, through cookiegate</h1>
          <div className="muted">
            httpOnly cookie in the browser, <code>Authorization: Bearer</code> at the API. No token in this page.
          </div>
        </div>
        <div className="row">
          {user ? (
            <>
              <span data-testid="user">
                Signed in as <b>{user}</b>
              </span>
              <button className="secondary" onClick={logout} data-testid="logout">
                Sign out
              </button>
            </>
          ) : (
            <span data-testid="user">{user === null ? "Signed out" : "…"}</span>
          )}
        </div>
      </header>

      <div className="grid">
        <section className="wide">
          <h2>What this page&apos;s script can see</h2>
          <div className="row">
            <span>
              <code>document.cookie</code> =
            </span>
            <code className="status" data-testid="document-cookie">
              {JSON.stringify(cookie)}
            </code>
            <span className="muted">
              (<code>auth_token</code> is httpOnly: the browser sends it, scripts cannot read it)
            </span>
          </div>
          <div className="row" style={{ marginTop: 8 }}>
            <span>Last API call:</span>
            <code className={`status ${status.ok ? "ok" : "error"}`} data-testid="api-status">
              {status.text}
            </code>
          </div>
          {user === null && (
            <form className="row" style={{ marginTop: 10 }} onSubmit={login} data-testid="login-form">
              <input type="text" name="username" defaultValue="ada" aria-label="user name" />
              <input type="password" name="password" defaultValue="lovelace" aria-label="password" />
              <button type="submit" data-testid="login">
                Sign in
              </button>
              <span className="muted">demo accounts: ada / lovelace, grace / hopper, alan / turing</span>
            </form>
          )}
        </section>

        <section>
          <h2>Tasks</h2>
          <form className="row" onSubmit={createTask}>
            <input
              type="text"
              value={newTitle}
              onChange={(e) => setNewTitle(e.target.value)}
              placeholder="New task"
              data-testid="new-task"
            />
            <button type="submit" data-testid="add-task" disabled={!user}>
              Add
            </button>
          </form>
          <ul className="tasks" data-testid="tasks">
            {tasks.map((task) => (
              <li key={task.id} className={task.done ? "done" : ""} data-task-id={task.id} data-title={task.title}>
                <input
                  type="checkbox"
                  checked={task.done}
                  onChange={(e) => void updateTask(task.id, { done: e.target.checked })}
                  aria-label="done"
                />
                {editing?.id === task.id ? (
                  <form
                    className="row title"
                    onSubmit={(e) => {
                      e.preventDefault();
                      void updateTask(task.id, { title: editing.title }).then(() => setEditing(null));
                    }}
                  >
                    <input
                      type="text"
                      value={editing.title}
                      onChange={(e) => setEditing({ id: task.id, title: e.target.value })}
                      data-testid="edit-title"
                    />
                    <button type="submit" data-testid="save">
                      Save
                    </button>
                  </form>
                ) : (
                  <>
                    <span className="title">{task.title}</span>
                    <button className="secondary" onClick={() => setEditing({ id: task.id, title: task.title })} data-testid="edit">
                      Edit
                    </button>
                  </>
                )}
                <button className="danger" onClick={() => void deleteTask(task.id)} data-testid="delete">
                  Delete
                </button>
              </li>
            ))}
            {user && tasks.length === 0 && <li className="muted">No tasks yet.</li>}
          </ul>
        </section>

        <section>
          <h2>File upload and download</h2>
          <form className="row" onSubmit={uploadFile}>
            <input type="file" onChange={(e) => setFile(e.target.files?.[0] ?? null)} data-testid="file" />
            <button type="submit" disabled={!file || !user} data-testid="upload">
              Upload
            </button>
          </form>
          {upload && (
            <div style={{ marginTop: 10 }} data-testid="uploaded" data-file-id={upload.id}>
              Uploaded <code>{upload.name}</code>: {upload.size} bytes, <code>{upload.content_type}</code>{" "}
              <button className="secondary" onClick={downloadFile} data-testid="download">
                Download it back
              </button>
            </div>
          )}
          {downloaded && (
            <div style={{ marginTop: 10 }} data-testid="downloaded" data-matches={String(downloaded.matches)}>
              Got {downloaded.size} bytes, <code>{downloaded.contentType}</code>,{" "}
              <code>{downloaded.disposition}</code>:{" "}
              <b style={{ color: downloaded.matches ? "var(--good)" : "var(--bad)" }}>
                {downloaded.matches ? "identical to the upload" : "DIFFERENT from the upload"}
              </b>{" "}
              <a href={downloaded.url} download={upload?.name}>
                save
              </a>
            </div>
          )}
        </section>

        <section className="wide">
          <h2>Assistant (server-sent events through /api/chatkit)</h2>
          <form className="row" onSubmit={ask}>
            <input type="text" value={question} onChange={(e) => setQuestion(e.target.value)} data-testid="question" />
            <button type="submit" disabled={!user || streaming} data-testid="ask">
              Ask
            </button>
          </form>
          <div
            className="reply"
            style={{ marginTop: 10 }}
            data-testid="reply"
            data-done={String(!!sse?.done)}
            data-arrivals={JSON.stringify(arrivals)}
          >
            {reply || <span className="muted">The reply appears here token by token.</span>}
          </div>
          {sse && (
            <div className="muted mono" style={{ marginTop: 6 }} data-testid="sse-stats">
              {arrivals.length} tokens; first after {arrivals[0] ?? "–"} ms; spread over {spread} ms
              {sse.done ? "; done" : streaming ? "; streaming…" : ""}
            </div>
          )}
        </section>
      </div>
    </main>
  );
}
