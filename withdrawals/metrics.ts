/** The withdrawal approval service's Prometheus metrics, on a registry the caller owns. */
import { Counter, Registry } from 'prom-client';

export function createWithdrawalMetrics(registry: Registry = new Registry()) {
  return {
    registry,
    answers: new Counter({
      name: 'credana_withdrawal_approvals_total',
      help: 'Withdrawal approval requests answered, by result (approved, a refusal reason such as uncovered, unauthorized, invalid_request)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
  };
}
export type WithdrawalMetrics = ReturnType<typeof createWithdrawalMetrics>;
