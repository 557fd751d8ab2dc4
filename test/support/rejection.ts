/** The error `work` rejects with; throws (failing the test) if it resolves. */
export async function rejection(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}
