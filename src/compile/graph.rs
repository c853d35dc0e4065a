//! The graph: drafts as nodes, data and ordering edges, cycles reported with their path, and
//! how each transform runs (fused, shared, checked).

use super::*;

/// The task graph: drafts as nodes, data edges from inputs (and the tables checks read),
/// ordering edges from `depends_on`; `order` is topological, ties in file order.
pub(super) struct TaskGraph {
    pub graph: DiGraph<Draft, Edge>,
    pub index: HashMap<String, NodeIndex>,
    pub order: Vec<NodeIndex>,
}

impl Compiler<'_> {
    /// The graph of `drafts`; `None` when it has a cycle (reported with its path).
    pub(super) fn graph(&mut self, drafts: Vec<Draft>, names: &indexmap::IndexSet<&str>) -> Option<TaskGraph> {
        let p = self.p;
        // The graph: data edges from inputs, ordering edges from depends_on.
        let mut graph: DiGraph<Draft, Edge> = DiGraph::with_capacity(drafts.len(), drafts.len() * 2);
        let mut index = HashMap::new();
        for d in drafts {
            let name = d.name.clone();
            index.insert(name, graph.add_node(d));
        }
        let mut edges = Vec::new();
        for i in graph.node_indices() {
            let inputs: Vec<String> = match &graph[i].kind {
                DraftKind::Transform { inputs, .. } => inputs.clone(),
                DraftKind::Load(l) => vec![l.from.clone()],
                _ => vec![],
            };
            for input in inputs.iter().chain(&graph[i].check_inputs) {
                if let Some(&from) = index.get(input) {
                    edges.push((from, i, Edge::Data));
                }
            }
            let name = graph[i].name.clone();
            let deps = p.spec.tasks.get(&name).map(|t| t.depends_on.clone()).unwrap_or_default();
            for (k, dep) in deps.iter().enumerate() {
                let path = ypath!["tasks", &name, "depends_on"].index(k);
                match index.get(dep) {
                    Some(&from) if from == i => self.diags.push(p.diag_value(
                        "depends-on",
                        &path,
                        dep.len(),
                        format!("task `{name}` depends on itself"),
                    )),
                    Some(&from) => edges.push((from, i, Edge::Order)),
                    None => self.diags.push(
                        p.diag_value(
                            "unknown-task",
                            &path,
                            dep.len(),
                            format!("`depends_on` names unknown task `{dep}`"),
                        )
                        .maybe_help(did_you_mean(dep, names.iter().copied())),
                    ),
                }
            }
        }
        for (a, b, w) in edges {
            graph.add_edge(a, b, w);
        }

        if !self.report_cycles(&graph) {
            return None;
        }
        let order = plan::stable_topo_order(&graph, |d| d.position)?;
        Some(TaskGraph { graph, index, order })
    }

    /// Report every cycle as `a → b → c → a`. False if there is one.
    pub(super) fn report_cycles(&mut self, graph: &DiGraph<Draft, Edge>) -> bool {
        let mut ok = true;
        let mut sccs = petgraph::algo::tarjan_scc(graph);
        sccs.sort_by_key(|c| c.iter().map(|i| graph[*i].position).min());
        for scc in sccs {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            ok = false;
            let members: HashSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc.iter().min_by_key(|i| graph[**i].position).unwrap_or(&scc[0]);
            let cycle = find_cycle(graph, start, &members);
            let text: Vec<&str> = cycle.iter().map(|i| graph[*i].name.as_str()).collect();
            let name = graph[start].name.clone();
            self.diags.push(
                self.p
                    .diag_key("cycle", &ypath!["tasks", &name], format!("dependency cycle: {}", text.join(" → ")))
                    .help("a task cannot depend on itself, directly or through others: remove one of these references"),
            );
        }
        ok
    }
}

/// The shortest path from `start` back to itself inside the strongly connected component.
pub(super) fn find_cycle(
    graph: &DiGraph<Draft, Edge>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::new();
    let mut succ: Vec<NodeIndex> = graph.neighbors(start).filter(|n| members.contains(n)).collect();
    succ.sort_by_key(|n| graph[*n].position);
    for n in succ {
        if n == start {
            return vec![start, start];
        }
        if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(n) {
            e.insert(start);
            queue.push_back(n);
        }
    }
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors(n).filter(|m| members.contains(m)).collect();
        next.sort_by_key(|m| graph[*m].position);
        for m in next {
            if m == start {
                let mut path = vec![start, n];
                let mut cur = n;
                while let Some(&p) = prev.get(&cur) {
                    if p == start {
                        break;
                    }
                    path.push(p);
                    cur = p;
                }
                // path is start, n, ..., first successor (reversed after start)
                let mut body: Vec<NodeIndex> = path[1..].to_vec();
                body.reverse();
                let mut out = vec![start];
                out.extend(body);
                out.push(start);
                return out;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}

impl TaskGraph {
    /// How each transform runs: computed once when several tasks read it, or when fusing it
    /// would nest more than MAX_FUSED_DEPTH queries into one; checked when it has checks;
    /// otherwise fused into its consumer's query.
    pub(super) fn executions(&self, checks: &HashMap<NodeIndex, Vec<CheckPlan>>) -> HashMap<NodeIndex, Execution> {
        let (graph, index, order) = (&self.graph, &self.index, &self.order);
        let consumers: HashMap<NodeIndex, usize> = graph
            .node_indices()
            .map(|i| {
                let mut c: Vec<NodeIndex> = graph
                    .edges_directed(i, petgraph::Direction::Outgoing)
                    .filter(|e| *e.weight() == Edge::Data)
                    .map(|e| petgraph::visit::EdgeRef::target(&e))
                    .collect();
                c.sort();
                c.dedup();
                (i, c.len())
            })
            .collect();
        let mut how: HashMap<NodeIndex, Execution> = HashMap::new();
        let mut depth: HashMap<NodeIndex, usize> = HashMap::new();
        for &i in order {
            let DraftKind::Transform { inputs, .. } = &graph[i].kind else { continue };
            let d =
                1 + inputs.iter().filter_map(|n| index.get(n)).filter_map(|j| depth.get(j)).max().copied().unwrap_or(0);
            let checked = checks.get(&i).is_some_and(|c| !c.is_empty());
            let e = if checked {
                Execution::Checked
            } else if consumers[&i] > 1 {
                Execution::Shared
            } else if d > MAX_FUSED_DEPTH && consumers[&i] == 1 {
                Execution::ChainBreak
            } else {
                Execution::Fused
            };
            depth.insert(i, if e == Execution::Fused { d } else { 0 });
            how.insert(i, e);
        }

        how
    }
}
