// Plain-text table of a run's metrics, grouped by section, for the terminal.

import type { Metric } from './measure';

function formatValue(metric: Metric): string {
  switch (metric.unit) {
    case 'ops/s':
      return `${Math.round(metric.value).toLocaleString('en-US')} ops/s`;
    case 'kB':
      return `${(metric.value / 1024).toFixed(1)} MiB`;
    case 'ratio':
      return `${metric.value.toFixed(2)}x`;
    case 'us/op':
      return `${metric.value.toFixed(1)} us/cmd`;
  }
}

function detail(metric: Metric): string {
  const parts: string[] = [];
  if (metric.ops !== undefined && metric.elapsedMs !== undefined) parts.push(`${metric.ops} ops in ${(metric.elapsedMs / 1000).toFixed(2)} s`);
  else if (metric.ops !== undefined) parts.push(`${metric.ops} cmds`);
  if (metric.cpuUsPerOp !== undefined) parts.push(`${metric.section === 'protocol' ? 'server ' : ''}CPU ${metric.cpuUsPerOp} us/op`);
  if (metric.clientEventLoopUtilization !== undefined) parts.push(`client ELU ${metric.clientEventLoopUtilization}`);
  if (metric.latency) parts.push(`p50 ${metric.latency.p50Us} us, p99 ${metric.latency.p99Us} us`);
  if (metric.statuses) parts.push(Object.entries(metric.statuses).map(([name, n]) => `${name} ${n}`).join(', '));
  if (metric.note) parts.push(metric.note);
  return parts.join('; ');
}

export function formatTable(metrics: readonly Metric[]): string {
  const rows: string[] = [];
  const labelWidth = Math.min(90, Math.max(...metrics.map((m) => m.label.length)));
  const valueWidth = Math.max(...metrics.map((m) => formatValue(m).length));
  // Sections in order of first appearance, each printed as one block.
  const sections = [...new Set(metrics.map((m) => m.section))];
  for (const section of sections) {
    rows.push('', `== ${section} ==`);
    for (const metric of metrics.filter((m) => m.section === section)) {
      rows.push(`${metric.label.padEnd(labelWidth)}  ${formatValue(metric).padStart(valueWidth)}  ${detail(metric)}`);
    }
  }
  return rows.join('\n').trimStart();
}
