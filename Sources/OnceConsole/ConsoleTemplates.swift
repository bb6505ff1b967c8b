import Mustache

/// The console's Mustache templates, compiled into the binary (no files to ship, no build step).
///
/// Every page inherits `layout` (`{{<layout}}…{{/layout}}`) and fills its `content` block. Data
/// is only ever written with the escaping tag `{{name}}`; no template uses `{{{…}}}` or `{{&…}}`
/// (a test checks), so any text from the database, the broker or a request arrives as text.
enum ConsoleTemplates {
    static let all: [String: String] = [
        "layout": layout,
        "overview": overview,
        "throughput": throughput,
        "outcomes": outcomes,
        "dead-letters": deadLetters,
        "dead-letter": deadLetter,
        "offsets": offsets,
        "offsets-done": offsetsDone,
        "replays": replays,
        "audit": audit,
        "login": login,
        "message": message,
    ]

    /// The compiled library; a template that does not parse is a programming error.
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in all {
            do {
                try library.register(text, named: name)
            } catch {
                fatalError("console template \(name) does not parse: \(error)")
            }
        }
        return library
    }()

    static let style = """
        :root{--fg:#1d2330;--muted:#5d6678;--line:#dde1e8;--bg:#f6f7f9;--accent:#2458c6;--bad:#b3261e;--ok:#1e7a3c}
        *{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:var(--fg);background:var(--bg)}
        header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}
        header .brand{font-weight:700;letter-spacing:.5px}header nav a{color:#c9d3e6;text-decoration:none;margin-right:12px}
        header nav a.current{color:#fff;border-bottom:2px solid #7aa2ff}header .who{margin-left:auto;color:#c9d3e6;font-size:13px}
        header .who form{display:inline}header .who button{background:none;border:1px solid #55607a;color:#fff;padding:2px 8px;border-radius:4px;cursor:pointer}
        header .who a{color:#fff}
        main{max-width:1180px;margin:0 auto;padding:18px 20px 40px}h1{font-size:20px;margin:4px 0 14px}h2{font-size:16px;margin:22px 0 8px}
        table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}th,td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
        th{background:#eef1f5;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.3px;color:var(--muted)}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
        .card{background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px 16px;margin:10px 0}
        .cards{display:flex;gap:12px;flex-wrap:wrap}.cards .card{flex:1;min-width:150px}.big{font-size:24px;font-weight:700}.muted{color:var(--muted)}
        .notice{background:#e8f3ec;border:1px solid #b6dcc2;color:#14532d;padding:8px 12px;border-radius:6px;margin:8px 0}
        .error{background:#fbeaea;border:1px solid #efb8b4;color:#7f1d1d;padding:8px 12px;border-radius:6px;margin:8px 0}
        .readonly{background:#fff7e0;border:1px solid #f0d68a;color:#6b4e00;padding:8px 12px;border-radius:6px;margin:8px 0}
        pre{background:#0f1320;color:#e6e9ef;padding:12px;border-radius:6px;overflow:auto;max-height:420px;font-size:12.5px}
        form.inline{display:inline}form.filters{display:flex;gap:10px;align-items:end;flex-wrap:wrap}label{font-size:12px;color:var(--muted);display:block}
        input,select,textarea{font:inherit;padding:4px 6px;border:1px solid #b9c0cc;border-radius:4px;background:#fff}
        button{font:inherit;padding:5px 12px;border-radius:4px;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer}
        button.danger{background:var(--bad);border-color:var(--bad)}button.plain{background:#fff;color:var(--accent)}
        .tag{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;background:#eef1f5}.tag.bad{background:#fbeaea;color:var(--bad)}.tag.ok{background:#e8f3ec;color:var(--ok)}
        .o-applied{fill:#2f7d4f;background:#2f7d4f}.o-duplicate{fill:#7a8ca8;background:#7a8ca8}.o-conflict{fill:#d08a18;background:#d08a18}.o-dead_lettered{fill:#b3261e;background:#b3261e}
        .swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
        svg text{font:11px system-ui,sans-serif;fill:#5d6678}svg .grid{stroke:#e3e6ec}svg .axis{stroke:#9aa3b2}
        .bar{height:8px;background:#e3e6ec;border-radius:4px;overflow:hidden;min-width:120px}.bar span{display:block;height:8px;background:var(--accent)}
        """

    static let layout = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
        {{#refresh}}<meta http-equiv="refresh" content="{{refresh}}">{{/refresh}}
        <title>{{title}} · once console</title><style>\(style)</style></head>
        <body>
        <header><span class="brand">once</span><span class="muted">group {{group}}</span>
        <nav>{{#nav}}<a href="{{href}}"{{#current}} class="current"{{/current}}>{{label}}</a>{{/nav}}</nav>
        <span class="who">{{#session}}operator {{operatorName}} <form class="inline" method="post" action="/console/logout"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="logout">log out</button></form>{{/session}}{{^session}}{{#actionsEnabled}}read-only · <a href="/console/login" id="login-link">log in to act</a>{{/actionsEnabled}}{{^actionsEnabled}}read-only{{/actionsEnabled}}{{/session}}</span>
        </header>
        <main>
        {{#notice}}<div class="notice" id="notice">{{notice}}</div>{{/notice}}
        {{#error}}<div class="error" id="error">{{error}}</div>{{/error}}
        {{^actionsEnabled}}<div class="readonly">Read-only: actions are disabled because no operator token is set. Start the console (or <code>once run</code>) with <code>ONCE_CONSOLE_TOKEN</code> in its environment to enable retry, discard and offset resets.</div>{{/actionsEnabled}}
        {{$content}}{{/content}}
        </main></body></html>
        """

    static let overview = """
        {{<layout}}{{$content}}
        <h1>Overview</h1>
        <div class="cards">
        <div class="card"><div class="muted">Total lag</div><div class="big" id="total-lag">{{totalLag}}</div></div>
        <div class="card"><div class="muted">Partitions</div><div class="big">{{partitionCount}}</div></div>
        <div class="card"><div class="muted">Unresolved dead letters</div><div class="big"><a href="/console/dead-letters">{{unresolved}}</a></div></div>
        <div class="card"><div class="muted">Outbox unpublished</div><div class="big">{{outbox}}</div></div>
        </div>
        {{#brokerNotes}}<div class="error">{{.}}</div>{{/brokerNotes}}
        <h2>Partitions</h2>
        <table id="partitions"><thead><tr><th>Topic</th><th class="n">Partition</th><th class="n">Stored next offset</th><th class="n">High watermark</th><th class="n">Lag</th><th>Owner</th><th class="n">Generation</th><th>Updated</th></tr></thead>
        <tbody>{{#partitions}}<tr><td>{{topic}}</td><td class="n">{{partition}}</td><td class="n">{{next}}</td><td class="n">{{high}}</td><td class="n">{{lag}}</td><td>{{owner}}</td><td class="n">{{generation}}</td><td>{{updated}}</td></tr>{{/partitions}}
        {{^partitions}}<tr><td colspan="8" class="muted">No partition stored, and the broker listed none.</td></tr>{{/partitions}}</tbody></table>
        <h2>Outcomes</h2>
        <p>{{#outcomes}}<span class="swatch o-{{name}}"></span>{{name}} <b>{{count}}</b> &nbsp; {{/outcomes}} <a href="/console/throughput">throughput over the last hour →</a></p>
        <p class="muted">As of {{asOf}} (database snapshot).</p>
        {{/content}}{{/layout}}
        """

    static let throughput = """
        {{<layout}}{{$content}}
        <h1>Throughput, last hour</h1>
        <p class="muted">Events processed per minute (processed_messages.processed_at), by outcome, in UTC. {{eventsInHour}} events in the hour; busiest minute {{peak}}.</p>
        <div class="card">
        <svg id="throughput-chart" role="img" aria-label="events per minute by outcome" width="{{width}}" height="{{height}}" viewBox="0 0 {{width}} {{height}}" xmlns="http://www.w3.org/2000/svg">
        {{#yTicks}}<line class="grid" x1="{{plotLeft}}" x2="{{plotRight}}" y1="{{position}}" y2="{{position}}"/><text x="{{labelX}}" y="{{labelY}}" text-anchor="end">{{label}}</text>{{/yTicks}}
        <line class="axis" x1="{{plotLeft}}" x2="{{plotRight}}" y1="{{plotBottom}}" y2="{{plotBottom}}"/>
        {{#xTicks}}<text x="{{position}}" y="{{labelY}}" text-anchor="middle">{{label}}</text>{{/xTicks}}
        {{#bars}}<rect class="o-{{outcome}}" x="{{x}}" y="{{y}}" width="{{width}}" height="{{height}}"><title>{{clock}} {{outcome}}: {{count}}</title></rect>{{/bars}}
        </svg>
        <p>{{#legend}}<span class="swatch o-{{name}}"></span>{{name}} {{count}} &nbsp; {{/legend}}</p>
        </div>
        {{^bars}}<p class="muted" id="no-events">No event processed in the last hour.</p>{{/bars}}
        {{/content}}{{/layout}}
        """

    static let outcomes = """
        {{<layout}}{{$content}}
        <h1>Outcomes</h1>
        <p class="muted">processed_messages rows of group {{group}}, inside the retention window.</p>
        <table id="outcomes"><thead><tr><th>Outcome</th><th class="n">Events</th><th>Share</th></tr></thead><tbody>
        {{#outcomes}}<tr><td><span class="swatch o-{{name}}"></span>{{name}}</td><td class="n">{{count}}</td><td><div class="bar"><span style="width:{{percent}}%"></span></div></td></tr>{{/outcomes}}
        <tr><td><b>total</b></td><td class="n"><b>{{total}}</b></td><td></td></tr></tbody></table>
        <h2>By event type</h2>
        <table id="by-type"><thead><tr><th>Event type</th><th class="n">applied</th><th class="n">duplicate</th><th class="n">conflict</th><th class="n">dead_lettered</th></tr></thead><tbody>
        {{#byType}}<tr><td>{{type}}</td><td class="n">{{applied}}</td><td class="n">{{duplicate}}</td><td class="n">{{conflict}}</td><td class="n">{{deadLettered}}</td></tr>{{/byType}}
        {{^byType}}<tr><td colspan="5" class="muted">None yet.</td></tr>{{/byType}}</tbody></table>
        {{/content}}{{/layout}}
        """

    static let deadLetters = """
        {{<layout}}{{$content}}
        <h1>Dead letters</h1>
        <div class="cards">{{#reasons}}<div class="card"><div class="muted">{{reason}}</div><div class="big">{{count}}</div></div>{{/reasons}}{{^reasons}}<div class="card">No unresolved dead letters.</div>{{/reasons}}</div>
        <form class="filters card" method="get" action="/console/dead-letters" id="filters">
        <div><label for="reason">Reason</label><select name="reason" id="reason"><option value="">any</option>{{#reasonOptions}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/reasonOptions}}</select></div>
        <div><label for="topic">Topic</label><input name="topic" id="topic" value="{{filterTopic}}" placeholder="any"></div>
        <div><label for="since">Since (RFC 3339 or 30m, 2h, 1d)</label><input name="since" id="since" value="{{filterSince}}" placeholder="any time"></div>
        <div><label><input type="checkbox" name="resolved" value="1"{{#includeResolved}} checked{{/includeResolved}}> include resolved</label></div>
        <div><button type="submit" class="plain">Filter</button></div>
        </form>
        {{#filterError}}<div class="error">{{filterError}}</div>{{/filterError}}
        <table id="dead-letters"><thead><tr><th class="n">Id</th><th>Created</th><th>Source</th><th>Event id</th><th>Reason</th><th>Error</th><th class="n">Retries</th><th>State</th></tr></thead><tbody>
        {{#entries}}<tr><td class="n"><a href="/console/dead-letters/{{id}}" class="dl-link">{{id}}</a></td><td>{{createdAt}}</td><td>{{source}}</td><td>{{eventID}}</td><td><span class="tag bad">{{reason}}</span></td><td>{{error}}</td><td class="n">{{retries}}</td><td>{{state}}</td></tr>{{/entries}}
        {{^entries}}<tr><td colspan="8" class="muted">None match.</td></tr>{{/entries}}</tbody></table>
        {{#canAct}}{{#filterReason}}<div class="card"><form method="post" action="/console/dead-letters/discard" id="discard-reason"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="reason" value="{{filterReason}}"><label for="reason-note">Discard every unresolved {{filterReason}} dead letter, with a note</label> <input name="note" id="reason-note" size="50" required> <button type="submit" class="danger">Discard all {{filterReason}}</button></form></div>{{/filterReason}}{{/canAct}}
        {{/content}}{{/layout}}
        """

    static let deadLetter = """
        {{<layout}}{{$content}}
        {{#entry}}
        <h1>Dead letter {{id}} <span class="tag {{stateClass}}" id="state">{{state}}</span></h1>
        <table id="fields"><tbody>
        <tr><th>Consumer group</th><td>{{group}}</td></tr><tr><th>Source</th><td>{{source}} offset {{offset}}</td></tr>
        <tr><th>Event id</th><td>{{eventID}}</td></tr><tr><th>Reason</th><td>{{reason}}</td></tr><tr><th>Error</th><td id="dl-error">{{error}}</td></tr>
        <tr><th>Created</th><td>{{createdAt}}</td></tr><tr><th>Resolved</th><td>{{resolvedAt}}</td></tr><tr><th>Retries</th><td>{{retries}}</td></tr>
        {{#resolvedBy}}<tr><th>Resolved by</th><td>{{resolvedBy}}</td></tr>{{/resolvedBy}}{{#note}}<tr><th>Note</th><td id="dl-note">{{note}}</td></tr>{{/note}}
        </tbody></table>
        <h2>Headers</h2>
        <table id="headers"><tbody>{{#headers}}<tr><th>{{name}}</th><td>{{value}}</td></tr>{{/headers}}{{^headers}}<tr><td class="muted">none</td></tr>{{/headers}}</tbody></table>
        <h2>Payload <span class="muted">{{payloadSummary}}</span></h2>
        <pre id="payload">{{payload}}</pre>
        {{#unresolved}}{{#canAct}}
        <div class="card"><form method="post" action="/console/dead-letters/{{id}}/retry" class="inline" id="retry-form"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="retry">Retry through the pipeline</button></form></div>
        <div class="card"><form method="post" action="/console/dead-letters/{{id}}/discard" id="discard-form"><input type="hidden" name="csrf" value="{{csrf}}"><label for="note">Discard with a note (kept for the audit)</label> <input name="note" id="note" size="60" required> <button type="submit" class="danger" id="discard">Discard</button></form></div>
        {{/canAct}}{{/unresolved}}
        {{/entry}}
        <p><a href="/console/dead-letters">← all dead letters</a></p>
        {{/content}}{{/layout}}
        """

    static let offsets = """
        {{<layout}}{{$content}}
        <h1>Offset reset planner</h1>
        <p class="muted">Plan first: nothing changes until the plan is confirmed. Executing moves the stored positions in consumer_offsets in one transaction, one generation bump per partition; members working on those partitions see the new generation and restart there.</p>
        {{#noBroker}}<div class="error">No broker configured: planning needs the broker's watermarks. Start the console with --brokers.</div>{{/noBroker}}
        <form class="filters card" method="get" action="/console/offsets" id="planner">
        <div><label for="scope">Scope: all, or TOPIC, TOPIC:0,2 (several: blank-separated)</label><input name="scope" id="scope" value="{{scope}}" size="34" placeholder="all"></div>
        <div><label for="target">Target</label><select name="target" id="target">{{#targets}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/targets}}</select></div>
        <div><label for="value">Value (offset, RFC 3339 time, ±N, PT30M)</label><input name="value" id="value" value="{{value}}" size="26"></div>
        <div><button type="submit" class="plain" id="plan">Plan</button></div>
        </form>
        {{#planError}}<div class="error" id="plan-error">{{planError}}</div>{{/planError}}
        {{#plan}}
        <h2>Plan for group {{group}}</h2>
        <table id="plan-table"><thead><tr><th>Topic</th><th class="n">Partition</th><th class="n">Current</th><th class="n">Target</th><th class="n">Change</th><th class="n">Already processed</th><th class="n">Log start</th><th class="n">Log end</th><th>Owner</th></tr></thead><tbody>
        {{#rows}}<tr><td>{{topic}}</td><td class="n">{{partition}}</td><td class="n">{{current}}</td><td class="n">{{target}}</td><td class="n">{{change}}</td><td class="n">{{alreadyProcessed}}</td><td class="n">{{logStart}}</td><td class="n">{{logEnd}}</td><td>{{owner}}</td></tr>{{/rows}}
        {{^rows}}<tr><td colspan="9" class="muted">No partition in scope.</td></tr>{{/rows}}</tbody></table>
        {{#canAct}}{{#hasRows}}<div class="card"><form method="post" action="/console/offsets/execute" id="execute-form"><input type="hidden" name="csrf" value="{{csrf}}">{{#rows}}<input type="hidden" name="row" value="{{encoded}}">{{/rows}}<button type="submit" class="danger" id="execute">Execute this plan</button></form></div>{{/hasRows}}{{/canAct}}
        {{/plan}}
        {{/content}}{{/layout}}
        """

    static let offsetsDone = """
        {{<layout}}{{$content}}
        <h1>Offsets reset</h1>
        <table id="executed"><thead><tr><th>Topic</th><th class="n">Partition</th><th class="n">Next offset</th><th class="n">Generation</th></tr></thead><tbody>
        {{#positions}}<tr><td>{{topic}}</td><td class="n">{{partition}}</td><td class="n">{{next}}</td><td class="n">{{generation}}</td></tr>{{/positions}}</tbody></table>
        <p><a href="/console">→ overview</a></p>
        {{/content}}{{/layout}}
        """

    static let replays = """
        {{<layout}}{{$content}}
        <h1>Replays</h1>
        <p class="muted">Recorded by <code>once replay</code> after each batch. {{#anyRunning}}This page refreshes every {{refresh}} s while one runs.{{/anyRunning}}</p>
        <table id="replays"><thead><tr><th class="n">Id</th><th>Partition</th><th class="n">From</th><th class="n">Through</th><th>Progress</th><th class="n">Records</th><th class="n">Applied</th><th class="n">Duplicates</th><th class="n">Conflicts</th><th class="n">Dead-lettered</th><th>State</th><th>Started</th><th>Updated</th></tr></thead><tbody>
        {{#entries}}<tr><td class="n">{{id}}</td><td>{{partition}}{{#dryRun}} <span class="tag">dry run</span>{{/dryRun}}</td><td class="n">{{from}}</td><td class="n">{{through}}</td><td><div class="bar"><span style="width:{{percent}}%"></span></div> {{nextOffset}}</td><td class="n">{{records}}</td><td class="n">{{applied}}</td><td class="n">{{duplicates}}</td><td class="n">{{conflicts}}</td><td class="n">{{deadLettered}}</td><td><span class="tag {{stateClass}}">{{state}}</span> {{error}}</td><td>{{startedAt}}</td><td>{{updatedAt}}</td></tr>{{/entries}}
        {{^entries}}<tr><td colspan="13" class="muted">No replay recorded.</td></tr>{{/entries}}</tbody></table>
        {{/content}}{{/layout}}
        """

    static let audit = """
        {{<layout}}{{$content}}
        <h1>Credit audit <span class="tag {{cleanClass}}" id="audit-state">{{cleanText}}</span></h1>
        <p class="muted">Balances as of {{asOf}}; grants, charges and conflicts over all time; duplicates inside the retention window.</p>
        <h2>Anomalies</h2>
        <table id="anomalies"><thead><tr><th>Code</th><th>Tenant</th><th>Account</th><th>What</th></tr></thead><tbody>
        {{#anomalies}}<tr><td><span class="tag bad">{{code}}</span></td><td>{{tenant}}</td><td>{{account}}</td><td>{{summary}}</td></tr>{{/anomalies}}
        {{^anomalies}}<tr><td colspan="4" class="muted">None.</td></tr>{{/anomalies}}</tbody></table>
        <h2>Tenants</h2>
        <table id="tenants"><thead><tr><th>Tenant</th><th class="n">Accounts</th><th class="n">Grants</th><th class="n">Granted</th><th class="n">Charges</th><th class="n">Charged</th><th class="n">Balance</th><th class="n">Dup completions</th><th class="n">Dup grants</th><th class="n">Conflicts</th></tr></thead><tbody>
        {{#tenants}}<tr><td>{{tenant}}</td><td class="n">{{accounts}}</td><td class="n">{{grants}}</td><td class="n">{{granted}}</td><td class="n">{{charges}}</td><td class="n">{{charged}}</td><td class="n">{{balance}}</td><td class="n">{{dupCompletions}}</td><td class="n">{{dupGrants}}</td><td class="n">{{conflicts}}</td></tr>{{/tenants}}
        {{^tenants}}<tr><td colspan="10" class="muted">No credit activity.</td></tr>{{/tenants}}</tbody></table>
        <h2>Accounts</h2>
        <table id="accounts"><thead><tr><th>Tenant</th><th>Account</th><th class="n">Grants</th><th class="n">Granted</th><th class="n">Charges</th><th class="n">Charged</th><th class="n">Balance</th><th class="n">Conflicts</th><th>Anomalies</th></tr></thead><tbody>
        {{#accounts}}<tr><td>{{tenant}}</td><td>{{account}}</td><td class="n">{{grants}}</td><td class="n">{{granted}}</td><td class="n">{{charges}}</td><td class="n">{{charged}}</td><td class="n">{{balance}}</td><td class="n">{{conflicts}}</td><td>{{#anomalies}}<span class="tag bad">{{.}}</span> {{/anomalies}}</td></tr>{{/accounts}}
        {{^accounts}}<tr><td colspan="9" class="muted">No accounts.</td></tr>{{/accounts}}{{#more}}<tr><td colspan="9" class="muted">… and {{more}} more accounts (once audit credits lists them all).</td></tr>{{/more}}</tbody></table>
        {{/content}}{{/layout}}
        """

    static let login = """
        {{<layout}}{{$content}}
        <h1>Log in to act</h1>
        <div class="card">
        <form method="post" action="/console/login" id="login-form">
        <p><label for="token">Operator token (ONCE_CONSOLE_TOKEN)</label><input type="password" name="token" id="token" size="40" autocomplete="off" required></p>
        <p><label for="operator">Your name (kept on what you resolve)</label><input name="operator" id="operator" size="30"></p>
        <p><button type="submit" id="login-submit">Log in</button></p>
        </form></div>
        <p class="muted">The session is an HttpOnly, SameSite=Strict cookie that lasts 12 hours. Scripts can instead send <code>Authorization: Bearer &lt;token&gt;</code> with each POST.</p>
        {{/content}}{{/layout}}
        """

    static let message = """
        {{<layout}}{{$content}}
        <h1>{{heading}}</h1>
        <p id="message">{{text}}</p>
        {{#back}}<p><a href="{{back}}">← back</a></p>{{/back}}
        {{/content}}{{/layout}}
        """
}
